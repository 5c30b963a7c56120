"""`nora-bench plan` and its simulation (nora_bench/sizing.py): exact cases worked by hand, the cores
model, the recommendation, and bad input as one line (exit 2). Predicted vs measured on real runs is
bench/plan.py (a benchmark, not a timed test)."""

import pytest
from conftest import run_cli

from nora_bench.sizing import EpisodeCost, Latency, actions_per_query, simulate


def test_one_worker_is_the_sum_of_its_parts():
    # 2 episodes: reset 0.5 s + 3 settle steps, then 10 queries of 2 actions; 0.01 s/step, 0.1 s/query.
    eps = [EpisodeCost(steps=20, settle=3, step_s=0.01, reset_s=0.5, exec_per_query=2)] * 2
    r = simulate(eps, workers=1, replicas=1, latency=Latency(0.1, 0.0), max_batch=8, max_wait_s=0.0,
                 query_overhead_s=0.002, build_s=3.0)
    per_episode = 0.5 + 3 * 0.01 + 10 * (0.1 + 0.002 + 2 * 0.01)
    assert r["wall_s"] == pytest.approx(3.0 + 2 * per_episode) and r["batches"] == 20


def test_batching_shares_the_policy_and_cores_stretch_cpu_work():
    eps = [EpisodeCost(steps=10, settle=0, step_s=0.02, reset_s=0.0)] * 4
    # Four workers, one replica, a lone batch costs 0.1 s whatever its size: they batch together.
    r = simulate(eps, workers=4, replicas=1, latency=Latency(0.1, 0.0), max_batch=8, max_wait_s=0.005)
    assert r["mean_batch"] == pytest.approx(4.0) and r["wall_s"] == pytest.approx(10 * (0.1 + 0.02))
    # The same on one core: the four workers' steps share it (4x as long), the policy (a GPU) does not.
    slow = simulate(eps, workers=4, replicas=1, latency=Latency(0.1, 0.0), max_batch=8, max_wait_s=0.005, cores=1)
    assert slow["wall_s"] == pytest.approx(10 * (0.1 + 4 * 0.02))


def test_actions_per_query_follow_the_chunk_rule():
    assert actions_per_query({"time_horizon": 5}, "all") == 5
    assert actions_per_query({"time_horizon": 5}, "first") == 1
    assert actions_per_query({"horizon": 8}, "first:4") == 4
    assert actions_per_query({"horizon": 8}, "ensemble") == 1
    assert actions_per_query({"kind": "remote"}, "all") is None


def test_plan_recommends_workers_per_gpu():
    proc = run_cli("plan", "libero_spatial", "libero_10", "--policy", "nora-long-libero-spatial", "--gpus", "2",
                   "--cpus", "16", "--latency-ms", "60+2.5*b", "--trials", "5", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "100 episodes" in out and "5 action(s)/query" in out and "recommended:" in out
    assert "env workers per GPU" in out


@pytest.mark.parametrize("args,message", [
    (["--policy", "nora-long-libero-spatial"], "its per-batch latency is not known here: give --latency-ms"),
    (["--policy", "nora-libero-spatial", "--latency-ms", "fast"], "--latency-ms 'fast': write A or A+B*b"),
    (["--policy", "zero", "--gpus", "0"], "--gpus and --cpus must be >= 1"),
    (["--policy", "zero", "--success-rate", "0.9,0.8,0.7"], "give one value, or one per suite (1)"),
    (["--policy", "zero", "--records", "/nonexistent/run"], "--records /nonexistent/run: no such run folder"),
    (["--policy", "nope"], "unknown policy preset 'nope'"),
])
def test_plan_bad_input_is_one_line(args, message):
    proc = run_cli("plan", "libero_spatial", *args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3
