"""The harness at scale, without a simulator: zero-cost `fake` envs (nora_bench/envs/fake.py) and a
zero-cost batching policy actor (policies/fixed-cost.yaml), 100-step episodes, with 8, 32 and 64 envs
(Ray env workers reserve 0.02 CPU per env, so 64 fit on 2 cores) and 1-4 policy replicas, side by side:

- policy queries/s and episodes/min in the steady state (from the end of the first wave of episodes
  to the last; worker start-up excluded), against the targets (>= 1,000 queries/s, >= 300 episodes/min);
- the driver's CPU per episode (its process time over the run, Ray's driver threads included);
- the record writer's cost per episode (RunDir.append: JSON + write + fsync), and fsync alone;
- the policy actor's mean batch and how busy its thread was.

A row without images (the `zero` preset: the policy asks for no camera) beside one with 224x224 agentview
frames shows what observation transfer costs.

Each row runs twice, one right after the other: before (one env per Ray worker, one actor call per
query) and after (K envs per worker, their concurrent queries coalesced into one actor call carrying a
batch, `--envs-per-worker K`), with the after/before ratio beside it; 1, 2 and 4 policy replicas; and a
`ray.cluster_utils.Cluster` of several nodes on this machine.

    .venv/bin/python bench/bench_harness_scale.py [--envs 8,32,64] [--envs-per-worker 8] [--nodes 3] [--steps 100]
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


def run_one(envs: int, per_worker: int, replicas: int, images: bool, episodes: int, steps: int, max_batch: int,
            wait_ms: float, placement: str = "DEFAULT") -> dict:
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
        workers = envs // per_worker
        sched = Scheduler(config, TimedRunDir(Path(d) / "run", appends), ExecOptions(
            workers=workers, progress=False, policy_replicas=replicas, max_batch_size=max_batch, max_wait_ms=wait_ms,
            envs_per_worker=per_worker, worker_placement=placement))
        nodes: set[str] = set()
        cpu0, t0 = time.process_time(), time.perf_counter()
        sched.run(on_result=lambda r: (finished.append((time.perf_counter(), r.queries)), nodes.add(r.node)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(finished)
    # Steady state: from the end of the first wave (one episode per env) to the last episode.
    first = min(envs, n - 1)
    span = finished[-1][0] - finished[first - 1][0]
    queries = sum(q for _, q in finished[first:])
    stats = sched.policy_stats
    busy = sum(s["busy_s"] for s in stats)
    calls = sum(c["calls"] for c in sched.coalesce_stats)
    per_call = sum(c["queries"] for c in sched.coalesce_stats) / calls if calls else 1.0
    return {"envs": envs, "K": per_worker, "workers": workers, "replicas": replicas, "nodes": len(nodes),
            "queries/call": per_call, "images": "224px" if images else "none", "episodes": n,
            "queries/s": queries / span if span > 0 else float("nan"),
            "episodes/min": (n - first) / span * 60 if span > 0 else float("nan"),
            "driver_cpu_ms/ep": cpu / n * 1000, "writer_ms/ep": sum(appends) / len(appends) * 1000,
            "mean_batch": sum(s["requests"] for s in stats) / max(1, sum(s["batches"] for s in stats)),
            "actor_busy": busy / (wall * len(stats)) if stats else 0.0, "wall_s": wall}


def start_ray(nodes: int):
    """One Ray for a set of rows: local (nodes=1), or a ray.cluster_utils.Cluster of `nodes` nodes on this
    machine (separate raylets and object stores: calls between nodes go through the network stack)."""
    import ray

    system = {"max_direct_call_object_size": 1 << 20}
    if nodes == 1:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=512 * 2**20,
                 log_to_driver=False, _system_config=system)
        return None
    from ray.cluster_utils import Cluster

    # The head holds the driver and the policy actors; env workers (0.02 CPU each) go to any node.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": os.cpu_count(), "include_dashboard": False, "object_store_memory": 256 * 2**20,
        "_system_config": system})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=os.cpu_count(), object_store_memory=256 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", default="8,32,64", help="concurrent envs (episodes) per row")
    ap.add_argument("--envs-per-worker", type=int, default=8,
                    help="K of the 'after' rows (the 'before' rows: K=1, one env per Ray worker)")
    ap.add_argument("--replicas", default="1,2,4", help="policy replicas tried at the largest env count")
    ap.add_argument("--nodes", type=int, default=3, help="nodes of the ray.cluster_utils.Cluster rows (0: none)")
    ap.add_argument("--episodes-per-env", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    import ray

    env_counts = [int(w) for w in args.envs.split(",")]
    replica_counts = [int(r) for r in args.replicas.split(",")]
    big, k = env_counts[-1], args.envs_per_worker
    # (envs, replicas, images, nodes): each measured with K=1 and with K, one right after the other.
    plan = [(e, 1, True, 1) for e in env_counts]
    plan += [(big, r, True, 1) for r in replica_counts if r != 1]
    plan += [(env_counts[0], 1, False, 1)]
    if args.nodes > 1:
        plan += [(big, 2, True, args.nodes)]
    pairs = []
    loads = []
    for nodes in sorted({p[3] for p in plan}):
        cluster = start_ray(nodes)
        try:
            for e, r, images, _ in [p for p in plan if p[3] == nodes]:
                pair = []
                for per in (1, k):
                    # On the cluster the env workers are spread over its nodes (0.02 CPU each would all fit on one).
                    row = run_one(e, per, r, images, e * args.episodes_per_env, args.steps, args.max_batch, args.wait_ms,
                                  "SPREAD" if nodes > 1 else "DEFAULT")
                    row["cluster"] = nodes
                    loads.append(os.getloadavg()[0])
                    pair.append(row)
                    print(f"  done: {e} envs as {row['workers']} workers x {per}, {r} replicas, images {row['images']}, "
                          f"{nodes} node(s): {row['queries/s']:.0f} q/s (wall {row['wall_s']:.0f} s, load "
                          f"{loads[-1]:.1f})", flush=True)
                pairs.append(pair)
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
    with tempfile.TemporaryDirectory(dir=".") as d:
        fsync_ms = fsync_cost(Path(d)) * 1000
    print(f"\nHarness at scale: fake env (0 ms/step), zero-cost policy actor (max batch {args.max_batch}, "
          f"wait {args.wait_ms:g} ms), {args.steps}-step episodes, {os.cpu_count()} cores, load average "
          f"{min(loads):.1f}-{max(loads):.1f} over the rows (one core busy with another measurement)")
    header = ("envs", "workers x K", "replicas", "nodes", "images", "queries/s", "x target", "episodes/min", "x target",
              "after/before", "queries/call", "driver CPU ms/ep", "writer ms/ep", "mean batch", "actor busy", "wall s")
    out = []
    for before, after in pairs:
        for r in (before, after):
            out.append((r["envs"], f"{r['workers']} x {r['K']}", r["replicas"], f"{r['cluster']} ({r['nodes']} used)",
                        r["images"], f"{r['queries/s']:.0f}", f"{r['queries/s'] / TARGET_QPS:.2f}",
                        f"{r['episodes/min']:.0f}", f"{r['episodes/min'] / TARGET_EPM:.2f}",
                        f"{r['queries/s'] / before['queries/s']:.2f}" if r is after else "1.00",
                        f"{r['queries/call']:.1f}", f"{r['driver_cpu_ms/ep']:.1f}", f"{r['writer_ms/ep']:.2f}",
                        f"{r['mean_batch']:.1f}", f"{r['actor_busy']:.0%}", f"{r['wall_s']:.0f}"))
    common.table(out, header)
    print(f"\nfsync alone (2 kB line, this filesystem): {fsync_ms:.2f} ms; targets: {TARGET_QPS:.0f} queries/s, "
          f"{TARGET_EPM:.0f} episodes/min; before = one env per Ray worker (K=1, one actor call per query), "
          f"after = K={k} envs per worker (their queries coalesced into one call)")


if __name__ == "__main__":
    main()
