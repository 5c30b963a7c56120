"""Batching policy actor: 4 env workers sharing one policy actor, batched (max batch 4) vs unbatched
(max batch 1), measured side by side in one run. Two policies:

- a policy of fixed per-call cost (the zero policy sleeping `--latency` s per call, whatever the
  batch size: what a GPU forward pass looks like to the harness);
- the tiny NORA model (real Qwen2.5-VL classes, tiny weights) on CPU.

The env workers render nothing for the first (state-only zero policy) so the policy is the bottleneck.

    .venv/bin/python bench/bench_policy_actor.py [--episodes 4] [--steps 20] [--latency 0.2]
"""

import argparse
import tempfile
import time
from pathlib import Path

import common
import yaml

WAIT_MS = 50.0


def run(preset: dict, episodes: int, steps: int, max_batch: int, workers: int) -> tuple[float, dict]:
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "preset.yaml"
        path.write_text(yaml.safe_dump(preset))
        config = RunConfig.resolve(suite="libero_object", policy=str(path), tasks="0", trials=episodes, max_steps=steps,
                                   video=False)
        sched = Scheduler(config, RunDir(Path(d) / "run"), ExecOptions(
            workers=workers, policy_mode="actor", max_batch_size=max_batch, max_wait_ms=WAIT_MS, progress=False))
        t = time.perf_counter()
        sched.run()
        return time.perf_counter() - t, sched.policy_stats[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--skip-nora", action="store_true")
    a = ap.parse_args()
    presets = {f"fixed cost {a.latency:g} s/call": {"name": "fixed-cost", "kind": "zero", "cameras": [], "latency_s": a.latency}}
    tmp = tempfile.TemporaryDirectory()
    if not a.skip_nora:
        from nora_bench.policies.tiny_nora import build_tiny_nora

        ckpt = build_tiny_nora(Path(tmp.name) / "tiny-nora", time_horizon=1)
        presets["tiny NORA (CPU)"] = {"name": "tiny-nora", "kind": "nora", "checkpoint": str(ckpt), "time_horizon": 1,
                                      "norm_stats": "nora_libero", "unnorm_key": "libero_object", "gripper": "libero",
                                      "cameras": ["agentview"], "device": "cpu", "max_new_tokens": 8}
    rows = []
    for label, preset in presets.items():
        res = {}
        for max_batch in (1, a.workers):
            wall, stats = run(preset, a.episodes, a.steps, max_batch, a.workers)
            res[max_batch] = (a.episodes / wall * 60, stats)
        (u, _), (b, sb) = res[1], res[a.workers]
        rows.append((label, f"{u:.2f}", f"{b:.2f}", f"{sb['mean_batch']:.2f}", f"{b / u:.2f}x"))
    common.table(rows, ("policy", "unbatched ep/min", f"batched (max {a.workers}) ep/min", "mean batch", "speed-up"))
    print(f"({a.workers} env workers, {a.episodes} episodes x {a.steps} steps, one policy actor)")


if __name__ == "__main__":
    main()
