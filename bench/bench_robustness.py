"""The scripted expert on the robustness suites (suite families, suites/families/libero_pro.yaml).

The expert reads the goal from the BDDL, so a language perturbation must leave it unaffected and a
position or object perturbation may only cost what its skills cannot do: a sharp drop on a family is a
wiring bug until shown otherwise. Runs `nora-bench run <suite> --policy scripted` (real Ray env workers,
the simulator's success check, no video) for every runnable suite of the chosen families and bases,
each next to its base suite on the same tasks and init-state indices, one run folder per suite (a second
call with the same --out resumes), then prints and optionally writes the table.

    .venv/bin/python bench/bench_robustness.py                                   # everything: all tasks x 10 init states
    .venv/bin/python bench/bench_robustness.py --trials 2 --bases libero_spatial --families lan,swap
    .venv/bin/python bench/bench_robustness.py --summarize results/bench-robustness-X --markdown docs/robustness.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

BASES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")


def plan(families: list[str] | None, bases: list[str]) -> list[tuple[str, str]]:
    """(suite, family) to run: family by family in the order given (language first: the wiring check),
    base by base within a family, then the base suites, so that a cut-short measurement has every family."""
    from nora_bench.envs.libero_families import all_suites, family_data

    order = families or list(family_data().families)
    entries = [e for e in all_suites() if e.available and e.base_suite in bases and e.family in order]
    entries.sort(key=lambda e: (order.index(e.family), bases.index(e.base_suite), e.level))
    return [(e.name, e.family) for e in entries] + [(b, "base") for b in bases]


def run_suite(suite: str, trials: str, tasks: str | None, workers: int, out: Path, in_process: bool = False) -> float:
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    config = RunConfig.resolve(suite=suite, policy="scripted", tasks=tasks, trials=trials, video=False)
    t = time.perf_counter()
    Scheduler(config, RunDir(out), ExecOptions(workers=workers, progress=False, in_process=in_process)).run()
    return time.perf_counter() - t


def summarize(root: Path) -> "pd.DataFrame":
    """One row per run folder under root: family, level, base, counts, rate with its Wilson interval,
    the rate of the base suite on the same tasks and init-state indices, unsupported goals."""
    import pandas as pd

    from nora_bench.results import load, wilson_interval

    frames = {p.name: load(p) for p in sorted(root.iterdir()) if (p / "config.yaml").is_file()}
    rows = []
    for name, df in frames.items():
        if df.empty:
            continue
        scored = df[df["success"].notna()]
        k, n = int(scored["success"].astype(bool).sum()), len(scored)
        lo, hi = wilson_interval(k, n)
        base = str(df["base_suite"].iloc[0])
        b = frames.get(base)
        base_rate = float("nan")
        if b is not None and name != base and not b.empty:
            same = b[b["task_id"].isin(df["task_id"]) & b["init_state"].isin(df["init_state"]) & b["success"].notna()]
            base_rate = same["success"].astype(bool).mean() if len(same) else float("nan")
        unsupported = df["error"].fillna("").str.startswith("unsupported")
        rows.append({"suite": name, "family": df["family"].iloc[0], "level": df["level"].iloc[0], "base_suite": base,
                     "tasks": df["task_id"].nunique(), "init_states": df["init_state"].nunique(), "episodes": n,
                     "successes": k, "success_rate": k / n if n else float("nan"), "ci95_low": lo, "ci95_high": hi,
                     "base_rate_same_trials": base_rate, "errored": len(df) - n, "unsupported": int(unsupported.sum()),
                     "mean_env_steps": float(df["env_steps"].mean()),
                     "commit": (json.loads((root / name / "environment.json").read_text()).get("git_commit") or "")[:10]})
    return pd.DataFrame(rows)


def markdown(table, root: Path) -> str:
    def pct(x):
        return "-" if x != x else f"{100 * x:.1f}%"

    lines = ["| suite | family | level | base | tasks x init states | successes | rate | 95% CI | base, same trials | "
             "unsupported | errored |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['suite']} | {r['family']} | {r['level'] or '-'} | {r['base_suite']} | {r['tasks']} x "
                     f"{r['init_states']} | {r['successes']}/{r['episodes']} | {pct(r['success_rate'])} | "
                     f"[{pct(r['ci95_low'])}, {pct(r['ci95_high'])}] | {pct(r['base_rate_same_trials'])} | "
                     f"{r['unsupported']} | {r['errored']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="10", help="N: init states 0..N-1 per task, or a list like 0,5")
    ap.add_argument("--tasks", default=None, help="task ids, e.g. 0-4 (default: all runnable tasks)")
    ap.add_argument("--families", default=None, help="comma-separated families (default: every runnable one)")
    ap.add_argument("--bases", default=",".join(BASES))
    ap.add_argument("--suites", default=None, help="exactly these suites, in this order (instead of --families/--bases)")
    ap.add_argument("--no-base", action="store_true", help="skip the base suites (e.g. measured already)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--in-process", action="store_true",
                    help="one env worker in this process, no Ray (the same EnvWorker and protocol; for a crowded machine)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: results/bench-robustness-<time>)")
    ap.add_argument("--summarize", type=Path, default=None, help="run nothing: summarize the run folders in this folder")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table to this Markdown file")
    args = ap.parse_args()

    import pandas as pd
    import ray

    root = args.summarize or args.out or Path("results") / f"bench-robustness-{datetime.now():%Y%m%d-%H%M%S}"
    if not args.summarize:
        root.mkdir(parents=True, exist_ok=True)
        if args.suites:
            from nora_bench.config import load_suite

            todo = [(s, load_suite(s).perturbation(0)["family"]) for s in args.suites.split(",")]
        else:
            todo = plan(args.families.split(",") if args.families else None, args.bases.split(","))
        if args.no_base:
            todo = [(s, f) for s, f in todo if f != "base"]
        print(f"{len(todo)} suites -> {root}: " + ", ".join(s for s, _ in todo), flush=True)
        if not args.in_process:
            ray.init(num_cpus=max(os.cpu_count() or 1, args.workers), include_dashboard=False, log_to_driver=False,
                     object_store_memory=256 * 2**20)  # one Ray for every suite
        for suite, family in todo:
            wall = run_suite(suite, args.trials, args.tasks, args.workers, root / suite, args.in_process)
            print(f"{suite} ({family}): {wall / 60:.1f} min", flush=True)
    table = summarize(root)
    pd.set_option("display.width", 220)
    print(table.drop(columns=["commit"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.markdown:
        args.markdown.write_text(markdown(table, root))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
