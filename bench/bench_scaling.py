"""Scaling: episodes/min with 2 Ray env workers vs 1 on this machine (target >= 1.7x on 2 cores).

Workloads: a rendering policy (agentview every step, like NORA) and a state-only policy (no
rendering, like the scripted expert). Mesa's llvmpipe renders with one thread per core, so a
single rendering worker already uses every core; the 2-worker rendering case is measured both with
llvmpipe's default threads and with one render thread per worker.

    .venv/bin/python bench/bench_scaling.py [--tasks 0,1,2] [--trials 2] [--steps 150]
"""

import argparse

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="0,1")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    a = ap.parse_args()
    n = len(a.tasks.split(",")) * a.trials
    rows = []
    cases = (("render agentview", "zero-agentview", {}),
             ("render agentview, 1 render thread/worker", "zero-agentview", {"render_threads": 1}),
             ("state only (no rendering)", "zero", {}))
    for label, policy, kw in cases:
        eps, steady = {}, {}
        for workers in (1, 2):
            opts = kw if workers == 2 else {}
            records: list = []
            wall = common.harness_run("libero_spatial", policy, a.tasks, a.trials, a.steps, workers, video=False,
                                      records=records, **opts)
            eps[workers] = n / wall * 60
            # Steady state: episodes in flight / mean episode time (no Ray start-up, no env creation).
            steady[workers] = workers / (sum(r["timings"]["wall_s"] for r in records) / len(records)) * 60
        rows.append((label, f"{eps[1]:.2f}", f"{eps[2]:.2f}", f"{eps[2] / eps[1]:.2f}x",
                     f"{steady[2] / steady[1]:.2f}x"))
    common.table(rows, ("workload", "1 worker ep/min", "2 workers ep/min", "speed-up", "steady-state speed-up"))
    print(f"({n} episodes x {a.steps} steps each; ep/min include Ray start-up and env creation, the steady-state "
          "speed-up compares workers / mean episode time)")


if __name__ == "__main__":
    main()
