"""Scale and survive: dead workers, dead policy actors, killed drivers, worker-count independence,
and a two-node cluster. Real Ray, short episodes; real LIBERO where the outcome, the env or a
worker's CPU needs are checked, the fake env (no simulator) where only the machinery is."""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from conftest import REPO, run_cli

from nora_bench import results
from nora_bench.config import RunConfig
from nora_bench.episode import InfrastructureError
from nora_bench.policies.trivial import ZeroConfig, ZeroPolicy
from nora_bench.run.rundir import RunDir
from nora_bench.run.scheduler import ExecOptions, Scheduler


def config(policy="random", tasks="0", trials=3, steps=25, suite="libero_object"):
    return RunConfig.resolve(suite=suite, policy=policy, tasks=tasks, trials=trials, max_steps=steps, video=False)


def kill_at_marker(marker, killed: list, timeout=600.0):
    """SIGKILL the process whose id StallOncePolicy wrote to `marker` (it is blocked inside a call
    for a known episode)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if marker.exists():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.1)


def stall_config(marker, trials=2, steps=20):
    """The fake env: a killed worker or policy actor is the scheduler's and Ray's business, not LIBERO's."""
    cfg = config(policy="zero-agentview", trials=trials, steps=steps, suite="fake")
    cfg.policy = {**cfg.policy, "name": "stall", "kind": "fault_policies:StallOncePolicy", "marker": str(marker),
                  "episode": "fake/task000/trial01", "at_query": 3}
    return cfg


def fingerprints(run_dir) -> dict:
    df = results.load(run_dir)
    assert df["key"].is_unique, "an episode was recorded twice"
    return {r["key"]: (r["success"], r["termination"], r["env_steps"], r["env_info"]["final_state_sha1"])
            for r in df.to_dict("records")}


def test_killed_env_worker_is_replaced_and_its_episode_rerun(tmp_path, ray_local):
    """The worker is killed while its policy is inside query 3 of trial 1: that episode, and only
    it, is re-run on a fresh worker."""
    killed: list[int] = []
    marker = tmp_path / "stalled"
    t = threading.Thread(target=kill_at_marker, args=(marker, killed), daemon=True)
    t.start()
    rd = RunDir(tmp_path / "run")
    Scheduler(stall_config(marker, trials=3), rd, ExecOptions(workers=2, max_attempts=3, policy_mode="local")).run()
    t.join(timeout=5)
    assert killed, "the policy never reached the stall point"
    df = results.load(rd.path).set_index("key")
    assert sorted(df.index) == [f"fake/task000/trial0{i}" for i in range(3)]  # each exactly once
    assert df["attempts"].to_dict() == {"fake/task000/trial00": 1, "fake/task000/trial01": 2, "fake/task000/trial02": 1}
    assert "env worker died" in df.loc["fake/task000/trial01", "attempt_errors"][0]
    assert (df["termination"] == "step_limit").all()  # every episode finished in the end


def test_killed_policy_actor_is_restarted(tmp_path, ray_local):
    """The policy actor is killed with a call in flight for trial 1: Ray restarts it and the episode is
    re-run (an episode waiting on the actor at that moment may be re-run too; none is lost or doubled)."""
    killed: list[int] = []
    marker = tmp_path / "stalled"
    t = threading.Thread(target=kill_at_marker, args=(marker, killed), daemon=True)
    t.start()
    rd = RunDir(tmp_path / "run")
    Scheduler(stall_config(marker), rd, ExecOptions(workers=2, policy_mode="actor", max_attempts=3)).run()
    t.join(timeout=5)
    assert killed, "the policy never reached the stall point"
    df = results.load(rd.path).set_index("key")
    assert len(df) == 2 and df.index.is_unique
    assert (df["termination"] == "step_limit").all()
    stalled = df.loc["fake/task000/trial01"]
    assert stalled["attempts"] == 2 and "policy actor died" in stalled["attempt_errors"][0], stalled["attempt_errors"]


def test_episode_that_keeps_failing_is_recorded_as_errored(tmp_path, ray_local):
    cfg = config(policy="zero", trials=2, steps=5)
    cfg.suite["benchmark"] = "libero_nonexistent"  # every attempt raises in the worker
    rd = RunDir(tmp_path / "run")
    Scheduler(cfg, rd, ExecOptions(workers=1, max_attempts=2)).run()
    df = results.load(rd.path)
    assert len(df) == 2
    assert (df["termination"] == "error").all() and df["success"].isna().all()
    assert (df["attempts"] == 2).all()
    assert df["error"].str.contains("unknown LIBERO benchmark").all()
    assert results.suite_table(df).iloc[0]["errored"] == 2


@dataclass(frozen=True, kw_only=True)
class FlakyEnvConfig(ZeroConfig):
    flag: str


class FlakyEnvPolicy(ZeroPolicy):
    """Fails like a broken env on trial 1 while the file `flag` exists."""

    config_class = FlakyEnvConfig

    def __init__(self, config: FlakyEnvConfig, action_spec):
        super().__init__(config, action_spec)
        self.flag = config.flag

    def act(self, observations):
        if os.path.exists(self.flag) and any(o.episode.endswith("trial01") for o in observations):
            raise InfrastructureError("simulated env failure")
        return super().act(observations)


def test_retry_errors_reruns_only_errored_episodes_and_keeps_their_history(tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    cfg = config(policy="zero", trials=2, steps=5, suite="fake")  # the scheduler's bookkeeping: no simulator needed
    cfg.policy = {**cfg.policy, "name": "flaky", "kind": "test_faults:FlakyEnvPolicy", "flag": str(flag)}
    rd = RunDir(tmp_path / "run")
    options = ExecOptions(in_process=True, max_attempts=2, progress=False)
    assert Scheduler(cfg, rd, options).run() == 2
    df = results.load(rd.path)
    assert df.set_index("trial")["termination"].to_dict() == {0: "step_limit", 1: "error"}
    # A plain resume counts the errored episode as done; --retry-errors runs it (and only it) again.
    assert Scheduler(cfg, rd, options).run() == 0
    flag.unlink()
    options.retry_errors = True
    assert Scheduler(cfg, rd, options).run() == 1
    df = results.load(rd.path)
    assert len(df) == 2 and df.set_index("trial")["termination"].to_dict() == {0: "step_limit", 1: "step_limit"}
    history = [(r["trial"], r["termination"]) for r in rd.records()]
    assert history == [(0, "step_limit"), (1, "error"), (1, "step_limit")]  # the error record is kept
    from nora_bench.report.tables import run_tables

    notes = run_tables(rd.path).notes
    assert any("1 errored record(s) superseded" in n for n in notes), notes
    assert not any("recorded more than once" in n for n in notes), notes
    assert Scheduler(cfg, rd, options).run() == 0


def test_killed_driver_then_resume_equals_a_clean_run(tmp_path, no_ray):
    # One task (each worker builds its env once), four init states.
    args = ["run", "libero_object", "--policy", "random", "--tasks", "0", "--trials", "4", "--max-steps", "25",
            "--no-video"]
    # The clean run: the same run in this process (one env, no Ray; the CLI and its Ray are what the
    # crashed and resumed runs below go through).
    clean = tmp_path / "clean"
    assert Scheduler(config(tasks="0", trials=4, steps=25), RunDir(clean),
                     ExecOptions(in_process=True, progress=False)).run() == 4

    crashed = tmp_path / "crashed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen([sys.executable, "-m", "nora_bench.cli", *args, "--workers", "1", "--out", str(crashed)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(RunDir(crashed).records()) < 2:
            time.sleep(0.2)
        assert len(RunDir(crashed).records()) >= 2
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray die together
        driver.wait()
    done_before = len(RunDir(crashed).records())
    assert done_before < 4
    proc = run_cli(*args, "--workers", "2", "--resume", str(crashed))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming: {done_before} done" in proc.stdout
    # the union equals the clean run: same episodes, same outcomes, same final states; no duplicates.
    # It also shows worker-count and backend independence: 1 then 2 Ray workers vs one in-process env.
    assert fingerprints(crashed) == fingerprints(clean)


def test_two_node_cluster_places_workers_and_policy_by_resources(tmp_path, no_ray):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    gpu_like = cluster.add_node(num_cpus=2, resources={"policy_node": 1})
    try:
        rd = RunDir(tmp_path / "run")
        ray.init(address=cluster.address, log_to_driver=False)
        sched = Scheduler(config(policy="zero-agentview", tasks="0,1", trials=1, steps=8), rd,
                          ExecOptions(workers=2, policy_mode="actor", policy_resources={"policy_node": 1}))
        sched.run()
        df = results.load(rd.path)
        assert len(df) == 2 and (df["termination"] == "step_limit").all()
        assert df["node"].nunique() == 2, "the two env workers should run on the two nodes"
        assert sched.policy_stats[0]["node"] == gpu_like.node_id
        assert sched.policy_stats[0]["requests"] == 16
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_local_ray_start_that_times_out_is_tried_again(monkeypatch, no_ray):
    """Ray waits a fixed 30 s for its raylet to register (ray/_private/node.py, `raylet_start_wait_time_s`)
    and then raises 'The current node timed out during startup'; on a busy machine a second start
    succeeds. The first start here fails as Ray's does; the harness starts Ray again."""
    import pytest
    import ray

    from nora_bench import UserError
    from nora_bench.run import scheduler

    real_init, calls = ray.init, []

    def flaky_init(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because some of the "
                            "raylet failed to startup or the GCS has become overloaded.")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(scheduler.ray, "init", flaky_init)
    try:
        assert scheduler.init_ray(None, 1, verbose=False) is True
        assert len(calls) == 2 and ray.is_initialized()
    finally:
        ray.shutdown()
    # A start that keeps timing out ends in one line, after the attempts.
    calls.clear()

    def always_times_out(*args, **kwargs):
        calls.append(kwargs)
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(scheduler.ray, "init", always_times_out)
    with pytest.raises(UserError, match="Ray could not start on this machine"):
        scheduler.init_ray(None, 1, verbose=False)
    assert len(calls) == scheduler.RAY_START_ATTEMPTS
