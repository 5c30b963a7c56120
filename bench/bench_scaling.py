"""Scaling: episodes/min with 2 Ray env workers vs 1 on this machine. Target >= 1.7x.

Two workloads: a rendering policy (agentview every step, like NORA) and a state-only policy
(no rendering, like the scripted expert).

    .venv/bin/python bench/bench_scaling.py [--episodes 4] [--steps 60]
"""

import argparse

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    rows = []
    for label, policy, video in (("render agentview", "zero-agentview", False), ("state only", "zero", False)):
        eps = {}
        for workers in (1, 2):
            wall = common.harness_run("libero_spatial", policy, "0,1", a.episodes // 2, a.steps, workers, video=video)
            eps[workers] = a.episodes / wall * 60
        rows.append((label, f"{eps[1]:.2f}", f"{eps[2]:.2f}", f"{eps[2] / eps[1]:.2f}x"))
    common.table(rows, ("workload", "1 worker ep/min", "2 workers ep/min", "speed-up"))


if __name__ == "__main__":
    main()
