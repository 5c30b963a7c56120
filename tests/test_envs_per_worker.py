"""Several envs per Ray env worker (`--envs-per-worker K`): K episodes at once in one worker process,
their policy-actor queries coalesced into one call. Fake env through real Ray workers and a real
batching policy actor: records, videos, retries of a killed worker's K episodes, resume."""

import os
import signal
import threading
import time

import pytest
from conftest import run_cli

from nora_bench import results
from nora_bench.config import RunConfig
from nora_bench.episode import InfrastructureError
from nora_bench.run.coalescing import QueryCoalescer, chunk_from_wire, chunk_to_wire
from nora_bench.run.rundir import RunDir
from nora_bench.run.scheduler import ExecOptions, Scheduler
from nora_bench.types import ActionChunk


def test_coalesced_run_records_every_episode_with_its_video(tmp_path, ray_local):
    config = RunConfig.resolve(suite="fake", policy="fixed-cost", tasks="0-3", trials=2, max_steps=30, video=True)
    rd = RunDir(tmp_path / "run")
    sched = Scheduler(config, rd, ExecOptions(workers=2, envs_per_worker=4, progress=False, max_wait_ms=20))
    assert sched.run() == 8
    df = results.load(rd.path)
    assert sorted(df["key"]) == [f"fake/task00{t}/trial0{i}" for t in range(4) for i in (0, 1)]
    assert set(df["termination"]) == {"step_limit"} and (df["queries"] == 30).all() and (df["attempts"] == 1).all()
    assert df["worker"].nunique() <= 2  # eight episodes, two worker processes
    assert all((rd.path / v).is_file() and (rd.path / v).stat().st_size > 0 for v in df["video"])
    assert sched.policy_stats[0]["requests"] == 8 * 30  # every query answered by the batching actor
    calls = sum(c["calls"] for c in sched.coalesce_stats)
    assert sum(c["queries"] for c in sched.coalesce_stats) == 8 * 30
    assert calls < 8 * 30, "no two queries of a worker's envs ever shared a call"


def test_local_policy_with_several_envs_gives_the_same_records_as_one_env(tmp_path, ray_local):
    """Each env of a worker has its own policy instance: outcomes equal the one-env-per-worker run's."""
    def run(name, per):
        config = RunConfig.resolve(suite="fake", policy="random", tasks="0,1", trials=3, max_steps=12, video=False)
        rd = RunDir(tmp_path / name)
        Scheduler(config, rd, ExecOptions(workers=1, envs_per_worker=per, progress=False)).run()
        df = results.load(rd.path).set_index("key")
        return df[["termination", "env_steps", "queries", "success"]].sort_index()

    assert run("one", 1).equals(run("three", 3))


def kill_when_stalled(marker_dir, n: int, killed: list, timeout=600.0):
    """SIGKILL the worker once `n` episodes are stalled in it (all their markers hold its pid)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = {p.read_text() for p in marker_dir.iterdir() if not p.name.endswith(".tmp")}
        if len(list(marker_dir.glob("fake_*"))) >= n and len(pids) == 1:
            os.kill(int(pids.pop()), signal.SIGKILL)
            killed.append(True)
            return
        time.sleep(0.1)


def test_killed_worker_reruns_all_its_episodes_then_resume_runs_nothing(tmp_path, ray_local):
    """One worker with 3 envs is killed while all 3 episodes are stalled in it (mid-episode): each is
    re-run on a fresh worker (attempts 2, the death recorded); a resume of the finished run has nothing
    left to run."""
    markers = tmp_path / "markers"
    markers.mkdir()
    config = RunConfig.resolve(suite="fake", policy="zero", tasks="0", trials=3, max_steps=10, video=False)
    config.policy = {**config.policy, "name": "stall-all", "kind": "fault_policies:StallEveryEpisodePolicy",
                     "marker_dir": str(markers), "at_query": 3}
    killed: list = []
    t = threading.Thread(target=kill_when_stalled, args=(markers, 3, killed), daemon=True)
    t.start()
    rd = RunDir(tmp_path / "run")
    options = ExecOptions(workers=1, envs_per_worker=3, max_attempts=2, progress=False, policy_mode="local")
    assert Scheduler(config, rd, options).run() == 3
    t.join(timeout=5)
    assert killed, "the episodes never all stalled"
    df = results.load(rd.path).set_index("key")
    assert df.index.is_unique and len(df) == 3
    assert (df["termination"] == "step_limit").all() and (df["env_steps"] == 10).all()
    assert (df["attempts"] == 2).all() and df["worker"].nunique() == 1  # all three on the one replacement
    assert all("env worker died" in errs[0] for errs in df["attempt_errors"])
    assert Scheduler(config, rd, options).run() == 0


def test_killed_worker_with_one_attempt_is_recorded_as_errored_then_retried_on_resume(tmp_path, ray_local):
    markers = tmp_path / "markers"
    markers.mkdir()
    config = RunConfig.resolve(suite="fake", policy="zero", tasks="0", trials=2, max_steps=10, video=False)
    config.policy = {**config.policy, "name": "stall-all", "kind": "fault_policies:StallEveryEpisodePolicy",
                     "marker_dir": str(markers), "at_query": 3}
    killed: list = []
    t = threading.Thread(target=kill_when_stalled, args=(markers, 2, killed), daemon=True)
    t.start()
    rd = RunDir(tmp_path / "run")
    Scheduler(config, rd, ExecOptions(workers=1, envs_per_worker=2, max_attempts=1, progress=False,
                                      policy_mode="local")).run()
    t.join(timeout=5)
    assert killed
    assert set(results.load(rd.path)["termination"]) == {"error"}
    assert Scheduler(config, rd, ExecOptions(workers=1, envs_per_worker=2, progress=False, policy_mode="local",
                                             retry_errors=True)).run() == 2
    assert set(results.load(rd.path)["termination"]) == {"step_limit"}  # tables use the newest record


def test_coalescer_sends_once_everyone_waits_and_gives_each_caller_its_own_answer_or_error():
    sent: list[int] = []

    def send(observations):
        sent.append(len(observations))
        return [ValueError(f"bad {o}") if o == "bad" else ActionChunk(actions=o) for o in observations]

    c = QueryCoalescer(send, max_wait_ms=60_000)  # only the all-waiting rule can send in time
    for _ in range(3):
        c.start()
    answers: dict = {}

    def query(name):
        try:
            answers[name] = c.act(name).actions
        except ValueError as e:
            answers[name] = str(e)

    threads = [threading.Thread(target=query, args=(n,)) for n in ("a", "bad", "c")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert answers == {"a": "a", "bad": "bad bad", "c": "c"} and sent == [3]
    c.end()  # one episode ends: the other two form the next batch alone
    threads = [threading.Thread(target=query, args=(n,)) for n in ("a", "c")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert sent == [3, 2]


def test_coalescer_keeps_one_call_out_at_a_time():
    out, most = [0], [0]
    lock = threading.Lock()

    def send(observations):
        with lock:
            out[0] += 1
            most[0] = max(most[0], out[0])
        time.sleep(0.05)
        with lock:
            out[0] -= 1
        return [ActionChunk(actions=o) for o in observations]

    c = QueryCoalescer(send, max_wait_ms=0)  # no waiting for the others: only the one-call rule merges
    for _ in range(4):
        c.start()
    threads = [threading.Thread(target=lambda n=n: [c.act(n) for _ in range(5)]) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert most[0] == 1 and c.stats.queries == 20 and c.stats.calls < 20


def test_coalescer_failed_call_reaches_every_caller_and_wire_round_trip():
    def send(observations):
        raise InfrastructureError("policy actor died")

    c = QueryCoalescer(send, max_wait_ms=0)
    c.start()
    with pytest.raises(InfrastructureError, match="policy actor died"):
        c.act("x")
    chunk = ActionChunk(actions=[[1.0]], failures=["decode"], stop=None, info={"rt_ms": 3})
    assert chunk_from_wire(chunk_to_wire(chunk)) == chunk


def test_envs_per_worker_below_one_is_one_line():
    proc = run_cli("run", "fake", "--envs-per-worker", "0", timeout=120)
    assert proc.returncode == 2 and "--envs-per-worker must be >= 1" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
