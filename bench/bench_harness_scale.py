"""The harness at scale, without a simulator: zero-cost `fake` envs (nora_bench/envs/fake.py) and a
zero-cost batching policy actor (policies/fixed-cost.yaml), 100-step episodes, with 8, 32 and 64 env
workers (Ray actors reserving 0.02 CPU each, so 64 fit on 2 cores) and 1-2 policy replicas, side by side:

- policy queries/s and episodes/min in the steady state (from the end of the first wave of episodes
  to the last; worker start-up excluded), against the targets (>= 1,000 queries/s, >= 300 episodes/min);
- the driver's CPU per episode (its process time over the run, Ray's driver threads included);
- the record writer's cost per episode (RunDir.append: JSON + write + fsync), and fsync alone;
- the policy actor's mean batch and how busy its thread was.

A row without images (the `zero` preset: the policy asks for no camera) beside one with 224x224 agentview
frames shows what observation transfer costs.

    .venv/bin/python bench/bench_harness_scale.py [--workers 8,32,64] [--episodes-per-worker 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import common
import yaml

TARGET_QPS, TARGET_EPM = 1000.0, 300.0


class TimedRunDir:
    """A RunDir whose `append` (the record writer: JSON, write, fsync) is timed."""

    def __new__(cls, path, spent: list):
        from nora_bench.run.rundir import RunDir

        run_dir = RunDir(path)
        append = run_dir.append

        def timed(record):
            t = time.perf_counter()
            append(record)
            spent.append(time.perf_counter() - t)

        run_dir.append = timed
        return run_dir


def fsync_cost(folder: Path, n: int = 200) -> float:
    """Seconds per append+fsync of a 2 kB line on the run folder's filesystem."""
    path = folder / "fsync.probe"
    line = b"x" * 2048 + b"\n"
    with open(path, "ab") as f:
        t = time.perf_counter()
        for _ in range(n):
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return (time.perf_counter() - t) / n


def run_one(workers: int, replicas: int, images: bool, episodes: int, steps: int, max_batch: int, wait_ms: float) -> dict:
    from nora_bench.config import RunConfig
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    with tempfile.TemporaryDirectory() as d:
        policy = "fixed-cost"
        if not images:  # the same batching actor, asking for no camera
            preset = yaml.safe_load(Path(common.__file__).resolve().parents[1].joinpath("policies/fixed-cost.yaml").read_text())
            preset["cameras"] = []
            policy = str(Path(d) / "fixed-cost-noimages.yaml")
            Path(policy).write_text(yaml.safe_dump({**preset, "name": "fixed-cost-noimages"}))
        tasks = 4
        config = RunConfig.resolve(suite="fake", policy=policy, tasks=f"0-{tasks - 1}",
                                   trials=-(-episodes // tasks), max_steps=steps, video=False)
        appends: list[float] = []
        finished: list[tuple[float, int]] = []
        sched = Scheduler(config, TimedRunDir(Path(d) / "run", appends), ExecOptions(
            workers=workers, progress=False, policy_replicas=replicas, max_batch_size=max_batch, max_wait_ms=wait_ms))
        cpu0, t0 = time.process_time(), time.perf_counter()
        sched.run(on_result=lambda r: finished.append((time.perf_counter(), r.queries)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(finished)
    # Steady state: from the end of the first wave (one episode per worker) to the last episode.
    first = min(workers, n - 1)
    span = finished[-1][0] - finished[first - 1][0]
    queries = sum(q for _, q in finished[first:])
    stats = sched.policy_stats
    busy = sum(s["busy_s"] for s in stats)
    return {"workers": workers, "replicas": replicas, "images": "224px" if images else "none", "episodes": n,
            "queries/s": queries / span if span > 0 else float("nan"),
            "episodes/min": (n - first) / span * 60 if span > 0 else float("nan"),
            "driver_cpu_ms/ep": cpu / n * 1000, "writer_ms/ep": sum(appends) / len(appends) * 1000,
            "mean_batch": sum(s["requests"] for s in stats) / max(1, sum(s["batches"] for s in stats)),
            "actor_busy": busy / (wall * len(stats)) if stats else 0.0, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="8,32,64")
    ap.add_argument("--replicas", default="1,2", help="policy replicas tried at the largest worker count")
    ap.add_argument("--episodes-per-worker", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    import ray

    worker_counts = [int(w) for w in args.workers.split(",")]
    replica_counts = [int(r) for r in args.replicas.split(",")]
    # One Ray for every row (each row starts its own workers and actors); many CPU slots, since
    # fake workers reserve 0.02 CPU each and the policy actor none.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False,
             _system_config={"max_direct_call_object_size": 1 << 20})
    plan = [(w, 1, True) for w in worker_counts]
    plan += [(worker_counts[-1], r, True) for r in replica_counts if r != 1]
    plan += [(worker_counts[0], 1, False)]
    rows = []
    try:
        for w, r, images in plan:
            row = run_one(w, r, images, w * args.episodes_per_worker, args.steps, args.max_batch, args.wait_ms)
            rows.append(row)
            print(f"  done: {w} workers, {r} replicas, images {row['images']}: {row['queries/s']:.0f} q/s "
                  f"(wall {row['wall_s']:.0f} s)", flush=True)
    finally:
        ray.shutdown()
    with tempfile.TemporaryDirectory(dir=".") as d:
        fsync_ms = fsync_cost(Path(d)) * 1000
    load = os.getloadavg()[0]
    print(f"\nHarness at scale: fake env (0 ms/step), zero-cost policy actor (max batch {args.max_batch}, "
          f"wait {args.wait_ms:g} ms), {args.steps}-step episodes, {os.cpu_count()} cores, load average {load:.1f}")
    header = ("workers", "replicas", "images", "episodes", "queries/s", "x target", "episodes/min", "x target",
              "driver CPU ms/ep", "writer ms/ep", "mean batch", "actor busy", "wall s")
    common.table([(r["workers"], r["replicas"], r["images"], r["episodes"], f"{r['queries/s']:.0f}",
                   f"{r['queries/s'] / TARGET_QPS:.2f}", f"{r['episodes/min']:.0f}", f"{r['episodes/min'] / TARGET_EPM:.2f}",
                   f"{r['driver_cpu_ms/ep']:.1f}", f"{r['writer_ms/ep']:.2f}", f"{r['mean_batch']:.1f}",
                   f"{r['actor_busy']:.0%}", f"{r['wall_s']:.0f}") for r in rows], header)
    print(f"\nfsync alone (2 kB line, this filesystem): {fsync_ms:.2f} ms; targets: {TARGET_QPS:.0f} queries/s, "
          f"{TARGET_EPM:.0f} episodes/min")


if __name__ == "__main__":
    main()
