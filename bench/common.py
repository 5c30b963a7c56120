"""Shared helpers for the benchmarks: a temporary run, timing, printing."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@contextmanager
def timer(store: dict, name: str):
    t = time.perf_counter()
    yield
    store[name] = time.perf_counter() - t


def harness_run(suite: str, policy: str, tasks: str, trials: int, max_steps: int, workers: int,
                video: bool = True, records: list | None = None, **exec_kw) -> float:
    """Wall seconds of one `nora-bench run` (Ray start included) into a fresh folder; the episode
    records are appended to `records` when given."""
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    config = RunConfig.resolve(suite=suite, policy=policy, tasks=tasks, trials=trials, max_steps=max_steps, video=video)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        Scheduler(config, RunDir(Path(d) / "run"), ExecOptions(workers=workers, progress=False, **exec_kw)).run()
        wall = time.perf_counter() - t
        if records is not None:
            records.extend(RunDir(Path(d) / "run").records())
        return wall


def table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
