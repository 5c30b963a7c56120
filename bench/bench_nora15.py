"""NORA-1.5 flow sampling with a tiny checkpoint of the full architecture: one batched call of 8
observations vs 8 single calls (time ratio, interleaved rounds in one process), and where the time
goes: the VLM prefill vs the 10 expert steps.

    .venv/bin/python bench/bench_nora15.py [--batch 8] [--rounds 5] [--device cpu] [--dtype fp32] [--threads 1]

The tiny model (VLM: 2 layers, hidden 256, vision depth 2; expert hidden 96) stands for the real
one (36 layers, hidden 2048, expert 768) only as far as per-call overheads and the prefill/expert
proportions of a 2-layer stack go; the real VLM's prefill is far heavier than its expert steps.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def observations(keys: list[str]):
    import numpy as np

    from nora_bench.envs.base import Observation

    rng = np.random.default_rng(0)
    # One task's instruction for all: prompts of equal length, as in a LIBERO run of one task.
    return [Observation("put the black bowl on the plate", episode=k,
                        images={"agentview": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)}) for k in keys]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    # One thread by default: the tiny model's matmuls are too small to split, and on a loaded 2-core
    # machine 2 threads made each expert step 30x slower (measured: 0.38 s vs 0.013 s).
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import numpy as np
    import torch
    import transformers

    from nora_bench.envs.libero import LIBERO_ACTION_SPEC
    from nora_bench.episode import EpisodeSpec
    from nora_bench.policies import make_policy
    from nora_bench.policies.tiny_nora15 import build_tiny_nora15

    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        ckpt = build_tiny_nora15(Path(d) / "tiny", seed=3)
        policy = make_policy({"kind": "nora15", "name": "tiny", "checkpoint": str(ckpt), "norm_stats": "nora15_libero",
                              "unnorm_key": "libero_spatial_no_noops", "device": a.device, "dtype": a.dtype},
                             LIBERO_ACTION_SPEC)
    specs = [EpisodeSpec(suite="libero_spatial", task_id=0, trial=i, init_state=i, seed=7, max_steps=10)
             for i in range(a.batch)]
    obs = observations([s.key for s in specs])

    def restart():
        for s in specs:
            policy.start_episode(s.episode_info())

    restart()
    policy.sample(obs[:1])  # warm-up
    wall: dict[str, list[float]] = {"batched": [], "single": []}
    split: dict[str, list[tuple[float, float]]] = {"batched": [], "single": []}
    max_diff = 0.0
    for _ in range(a.rounds):  # interleaved, so load from other processes hits both modes alike
        restart()
        t = time.perf_counter()
        batched = policy.sample(obs)
        wall["batched"].append(time.perf_counter() - t)
        split["batched"].append((policy.last_timing.prefill_s, policy.last_timing.expert_s))
        restart()
        t = time.perf_counter()
        singles, pre, exp = [], 0.0, 0.0
        for o in obs:
            singles.append(policy.sample([o]))
            pre, exp = pre + policy.last_timing.prefill_s, exp + policy.last_timing.expert_s
        wall["single"].append(time.perf_counter() - t)
        split["single"].append((pre, exp))
        max_diff = max(max_diff, float(np.abs(batched - np.concatenate(singles)).max()))

    t_b, t_s = statistics.median(wall["batched"]), statistics.median(wall["single"])
    print(f"NORA-1.5 tiny (VLM 2 layers hidden 256, expert hidden 96, 10 steps) on {a.device} {policy.dtype}"
          f"{f', {a.threads} torch thread(s)' if a.device == 'cpu' else ''}: "
          f"{a.batch} observations, {a.rounds} interleaved rounds; python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} cores")
    print(f"  {a.batch} single calls : {t_s:7.3f} s  (median; {a.batch / t_s:6.2f} obs/s)")
    print(f"  1 batched call   : {t_b:7.3f} s  (median; {a.batch / t_b:6.2f} obs/s)")
    print(f"  speed-up batched vs single: {t_s / t_b:.2f}x   max |batched - single| (normalized actions): {max_diff:.1e}")
    for mode, w in (("batched", t_b), ("single", t_s)):
        pre = statistics.median(p for p, _ in split[mode])
        exp = statistics.median(e for _, e in split[mode])
        print(f"  {mode:7s}: prefill {pre:6.3f} s, 10 expert steps {exp:6.3f} s, prompt/processor and the rest "
              f"{w - pre - exp:6.3f} s  (expert share of model time {exp / (pre + exp):.0%}; "
              f"one step = {exp / 10 / pre:.2f}x a prefill)")


if __name__ == "__main__":
    main()
