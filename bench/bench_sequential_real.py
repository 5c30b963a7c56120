"""A real paired comparison through the harness (real LIBERO, real Ray) showing `--until decided` stop.

The scripted expert is the baseline (every episode of 2 libero_spatial tasks x N init states); then the
zero policy and the handicapped `scripted-noisy` variant run `--versus` it with `--until decided`.
Printed side by side: episodes each comparison used against the baseline's full count, the decision,
the discordant pairs and the e-value at the stop, and the wall time.

    python bench/bench_sequential_real.py [--trials 8] [--workers 2] [--baseline EXISTING_SCRIPTED_RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="160", MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nora_bench.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"nora-bench {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def episodes(run: Path) -> int:
    return sum(1 for line in (run / "episodes.jsonl").read_text().splitlines() if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline", type=Path, help="an existing scripted run of libero_spatial tasks 0,1 to reuse")
    ap.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sequential-"))
    common = ["--no-video", "--workers", str(args.workers)]
    base = args.baseline or out / "scripted"
    rows = []
    if args.baseline is None:
        wall = cli("run", "libero_spatial", "--policy", "scripted", "--tasks", "0,1", "--trials", str(args.trials),
                   *common, "--out", str(base))
        rows.append(("scripted (baseline, every episode)", episodes(base), "-", "-", "-", f"{wall:.0f}"))
    n_base = episodes(base)
    for policy in ("zero", "scripted-noisy"):
        run = out / f"{policy}-vs-scripted"
        wall = cli("run", "libero_spatial", "--policy", policy, "--versus", str(base), "--until", "decided",
                   *common, "--out", str(run))
        rep = json.loads((run / "stopping.json").read_text())
        t = rep["test"]
        rows.append((f"{policy} --versus scripted --until decided", f"{rep['episodes_used']} used, {episodes(run)} run",
                     f"{n_base}", f"{t['decision']} ({rep['status']})",
                     f"{t['only_baseline']}/{t['only_this']}, e={t['e_value']:.1f}", f"{wall:.0f}"))
    table(rows, ("run", "episodes", "fixed (baseline's)", "decision", "only base/only this, e-value", "wall s"))
    print(f"run folders: {out}")


if __name__ == "__main__":
    main()
