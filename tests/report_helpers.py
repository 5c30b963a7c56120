"""Helpers shared by the report tests: run folders with records whose outcomes the test controls,
the CLI in a subprocess, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from nora_bench.config import RunConfig, load_policy_preset, load_suite
from nora_bench.episode import SUCCESS, EpisodeResult
from nora_bench.run.rundir import RunDir, package_versions
from nora_bench.video import VideoWriter

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`nora-bench ...` as a user runs it, in a subprocess of this interpreter."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200",
               MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.run([sys.executable, "-m", "nora_bench.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """`nora-bench ...` called in this process (typer's CliRunner): the whole command, its printing
    included, without a new interpreter's start-up; for tests that call a command many times (each
    command also has a test through `cli` in a subprocess)."""
    from typer.testing import CliRunner

    from nora_bench.cli import app

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # an uncaught error: its traceback, not an exit code
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def video_bytes(n_frames: int, colour: tuple[int, int, int]) -> bytes:
    """A real mp4 written by the harness's own VideoWriter."""
    w = VideoWriter()
    for i in range(n_frames):
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[:] = colour
        frame[(2 * i) % 64, :] = 255  # a moving line: frames differ
        w.add(frame)
    return w.finish()


def make_run(path: Path, episodes: list[dict], *, tasks=(0, 1), trials=range(10), max_steps: int = 220,
             chunk_exec: str = "all", versions: dict | None = None, videos: bool = False, created: datetime = START,
             suite: str = "libero_spatial", **config_kw) -> RunDir:
    """A run folder holding exactly `episodes` (dicts of EpisodeResult fields that override defaults)."""
    spec = load_suite(suite)
    config = RunConfig(suite=dataclasses.asdict(spec), policy=load_policy_preset("zero"),
                       tasks=list(tasks), trials=list(trials), max_steps=max_steps, chunk_exec=chunk_exec, **config_kw)
    rd = RunDir(path)
    rd.open(config, {**package_versions(), **(versions or {})})
    env = rd.read_environment()
    env["created"] = created.isoformat(timespec="seconds")
    (path / RunDir.ENVIRONMENT).write_text(json.dumps(env))
    for i, e in enumerate(episodes):
        e = dict(e)
        task, trial = e.pop("task_id"), e.pop("trial")
        key = f"{e.pop('suite', spec.name)}/task{task:03d}/trial{trial:02d}"
        termination = e.pop("termination")
        fields = dict(key=key, suite=key.split("/")[0], task_id=task, task=f"task_{task}_name",
                      instruction=f"do task {task}", trial=trial, init_state=trial, seed=1000 + i,
                      success=None if termination == "error" else termination == SUCCESS, termination=termination,
                      max_steps=max_steps, chunk_exec=chunk_exec, policy="zero",
                      **spec.perturbation(config.distractors), distractors=config.distractors,
                      finished_at=(created + timedelta(seconds=10 * (i + 1))).isoformat(timespec="seconds"),
                      timings={"reset_s": 0.5, "settle_s": 0.2, "policy_s": 0.1, "env_s": 2.0, "wall_s": 3.0},
                      versions=package_versions())
        fields.update(e)
        if videos and termination != "error":
            fields["video"] = rd.write_video(key, video_bytes(12, (40 * task % 255, 90, 160)))
        rd.append(EpisodeResult(**fields).to_dict())
    return rd


def outcomes(task: int, pattern: str, steps_success=(), **extra) -> list[dict]:
    """Episodes of one task from a pattern: S success, F step limit, E error, D policy stop, P policy error."""
    names = {"S": SUCCESS, "F": "step_limit", "E": "error", "D": "policy_stop", "P": "policy_error"}
    out, wins = [], iter(steps_success)
    for trial, c in enumerate(pattern):
        e = {"task_id": task, "trial": trial, "termination": names[c], **extra}
        e["env_steps"] = next(wins) if c == "S" else (0 if c == "E" else extra.get("env_steps", 220))
        e["queries"] = e["env_steps"]
        out.append(e)
    return out


def launch_browser(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `scripts/setup.sh --test` (installs Debian's chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
