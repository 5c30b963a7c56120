"""NORA inference on CPU with a tiny Qwen2.5-VL checkpoint: one batched call of 8 observations vs
8 single calls (time ratio, measured interleaved in one process), and the peak memory of a policy
process in each mode (each mode in its own fresh process).

    .venv/bin/python bench/bench_nora.py [--batch 8] [--rounds 5] [--new-tokens 20]

The tiny model (2 layers, hidden 64, vision depth 2) stands for the real 3B one only as far as the
per-call overheads go (processor, vision tower, generate loop); with the real model the prompt pass
dominates and batching gains more on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def observations(n: int):
    import numpy as np

    from nora_bench.envs.base import Observation

    words = ["put the black bowl on the plate", "open the top drawer", "turn on the stove", "pick up the ketchup"]
    rng = np.random.default_rng(0)
    return [Observation(words[i % len(words)], episode=f"ep{i}",
                        images={"agentview": rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)}) for i in range(n)]


def child(mode: str, ckpt: str, batch: int, rounds: int, new_tokens: int) -> dict:
    """Runs in a fresh process: load the policy, warm up, time the mode(s), report peak memory."""
    import torch

    from nora_bench.envs.libero import LIBERO_ACTION_SPEC
    from nora_bench.policies import make_policy

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    before = rss_mb()
    policy = make_policy({"kind": "nora", "name": "tiny", "checkpoint": ckpt, "time_horizon": 1,
                          "norm_stats": "nora_libero", "unnorm_key": "libero_spatial", "max_new_tokens": new_tokens},
                         LIBERO_ACTION_SPEC)
    loaded = rss_mb()
    obs = observations(batch)
    out: dict = {"rss_before_mb": before, "rss_loaded_mb": loaded}
    policy.generate(obs[:1])  # warm-up
    times: dict[str, list[float]] = {"batched": [], "single": []}
    modes = ["batched", "single"] if mode == "both" else [mode]
    same = True
    for _ in range(rounds):
        for m in modes:  # interleaved, so load from other processes hits both modes alike
            t = time.perf_counter()
            if m == "batched":
                ids_b = policy.generate(obs)
            else:
                ids_s = [policy.generate([o])[0] for o in obs]
            times[m].append(time.perf_counter() - t)
        if mode == "both":
            same = same and ids_b == ids_s
    out["times"] = {m: v for m, v in times.items() if v}
    out["same_tokens"] = same
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CKPT"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.batch, a.rounds, a.new_tokens)))
        return

    from nora_bench.policies.tiny_nora import build_tiny_nora

    with tempfile.TemporaryDirectory() as d:
        ckpt = str(build_tiny_nora(Path(d) / "tiny", seed=3))
        common = [f"--batch={a.batch}", f"--rounds={a.rounds}", f"--new-tokens={a.new_tokens}"]
        both = run_child("both", ckpt, *common)
        mem = {m: run_child(m, ckpt, *common) for m in ("single", "batched")}
    t_b = statistics.median(both["times"]["batched"])
    t_s = statistics.median(both["times"]["single"])
    import torch
    import transformers

    print(f"NORA tiny (Qwen2.5-VL, 2 layers, hidden 64) on CPU: {a.batch} observations, {a.new_tokens} new tokens each, "
          f"{a.rounds} interleaved rounds; python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} cores")
    print(f"  {a.batch} single calls : {t_s:7.3f} s  (median; {a.batch / t_s:6.2f} obs/s)")
    print(f"  1 batched call   : {t_b:7.3f} s  (median; {a.batch / t_b:6.2f} obs/s)")
    print(f"  speed-up batched vs single: {t_s / t_b:.2f}x   same tokens batched/single: {both['same_tokens']}")
    for m, r in mem.items():
        print(f"  policy process, {m:7s}: RSS {r['rss_before_mb']:.0f} MB before load, {r['rss_loaded_mb']:.0f} MB "
              f"loaded, peak {r['peak_rss_mb']:.0f} MB")
    print(f"  peak memory batched / single: {mem['batched']['peak_rss_mb'] / mem['single']['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
