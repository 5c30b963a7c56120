"""The scripted expert's success on the four main LIBERO suites, against the issue's targets.

Runs `nora-bench run <suite> --policy scripted` (real Ray env workers, the simulator's own success
check, no video) for every task x the first N init states, keeps each run folder (config, versions,
episodes.jsonl: everything needed to reproduce it) and prints per-task tables, per-suite rates with
95% intervals, the unsupported goals, and the ratio measured / target.

    .venv/bin/python bench/bench_scripted.py [--trials 50] [--suites libero_spatial,...] [--workers 2]
    .venv/bin/python bench/bench_scripted.py --render-ratio    # env ms/step without vs with rendering
    .venv/bin/python bench/bench_scripted.py --summarize results/bench-scripted-X --markdown docs/scripted.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

TARGETS = {"libero_spatial": 0.98, "libero_object": 0.98, "libero_goal": 0.90, "libero_10": 0.75}


def run_suite(suite: str, trials: str, tasks: str | None, workers: int, out: Path) -> float:
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    config = RunConfig.resolve(suite=suite, policy="scripted", tasks=tasks, trials=trials, video=False)
    t = time.perf_counter()
    Scheduler(config, RunDir(out), ExecOptions(workers=workers, progress=False)).run()
    return time.perf_counter() - t


def render_ratio(suite: str = "libero_spatial", task: int = 0, trial: int = 0) -> None:
    """The same expert episode without any rendering (state only) and with the agentview video on,
    side by side in one env: env time per step and the ratio."""
    from nora_bench.config import load_policy_preset
    from nora_bench.envs import make_env
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec, ProtocolRun
    from nora_bench.policies import make_policy
    from nora_bench.video import VideoWriter

    env = make_env("libero")
    rows = []
    try:
        for video in (False, True, False, True):  # interleaved: load drifts on a shared machine
            spec = EpisodeSpec(**libero_spec_fields(suite=suite, benchmark=suite, task_id=task, trial=trial, init_state=trial, seed=trial,
                               max_steps=300, cameras=(), state=True, video_cameras=("agentview",) if video else ()))
            policy = make_policy(load_policy_preset("scripted"), env.action_spec)
            writer = VideoWriter() if video else None
            out = ProtocolRun(env, spec, policy, writer.add if writer else None).run()
            if writer:
                writer.finish()
            rows.append((video, out.success, out.env_steps, 1000 * out.timings["env_s"] / out.env_steps))
    finally:
        env.close()
    for video, ok, steps, ms in rows:
        print(f"  {'video on ' if video else 'no render'}  success={ok}  steps={steps}  env {ms:6.1f} ms/step")
    plain = [ms for v, _, _, ms in rows if not v]
    rendered = [ms for v, _, _, ms in rows if v]
    print(f"rendering skipped: {sum(plain) / len(plain):.1f} ms/step vs {sum(rendered) / len(rendered):.1f} ms/step "
          f"with video, ratio {sum(rendered) / sum(plain):.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="50", help="N: init states 0..N-1 per task (50 = all), or a list like 10-19")
    ap.add_argument("--suites", default=",".join(TARGETS))
    ap.add_argument("--tasks", default=None, help="task ids, e.g. 0-4 (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: results/bench-scripted-<time>)")
    ap.add_argument("--render-ratio", action="store_true", help="only measure env time per step without / with rendering")
    ap.add_argument("--summarize", type=Path, default=None,
                    help="run nothing: summarize the run folders already in this folder (one per suite)")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args()
    if args.render_ratio:
        render_ratio()
        return

    import pandas as pd

    from nora_bench.results import load, suite_table, task_table

    root = args.summarize or args.out or Path("results") / f"bench-scripted-{datetime.now():%Y%m%d-%H%M%S}"
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 60)
    summary, md = [], []
    suites = args.suites.split(",")
    if args.summarize:
        suites = [s for s in suites if (root / s).is_dir()]
    for suite in suites:
        if args.summarize:
            df = load(root / suite)
            wall = float(df["time_wall_s"].sum() / max(1, df["worker"].nunique())) if "time_wall_s" in df else float("nan")
        else:
            wall = run_suite(suite, args.trials, args.tasks, args.workers, root / suite)
            df = load(root / suite)
        tt = task_table(df)
        unsupported = df[df["error"].fillna("").str.startswith("unsupported")]
        print(f"\n== {suite}: {len(df)} episodes in {wall / 60:.1f} min ({root / suite})")
        print(tt[["task_id", "task", "episodes", "successes", "errored", "success_rate"]].to_string(index=False))
        if len(unsupported):
            print("unsupported:", "; ".join(sorted(set(unsupported["task"] + ": " + unsupported["error"]))))
        env = json.loads((root / suite / "environment.json").read_text())
        commit = env.get("git_commit") or "unknown"
        commit = commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")
        md.append(f"### {suite}\n\nCommit `{commit}`, {len(df)} episodes, "
                  f"init states {df['init_state'].min()}-{df['init_state'].max()}.\n")
        md.append(tt[["task_id", "task", "episodes", "successes", "errored", "success_rate"]]
                  .to_markdown(index=False, floatfmt=".2f") + "\n")
        st = suite_table(df).iloc[0]
        summary.append((suite, len(df), int(st["successes"]), st["success_rate"], st["ci95_low"], st["ci95_high"],
                        TARGETS.get(suite, float("nan")), len(unsupported), float(df["env_steps"].mean()), wall))
    print(f"\n== scripted expert vs targets (trials per task: {args.trials})")
    print(f"{'suite':16} {'episodes':>8} {'success':>8} {'rate':>7} {'95% CI':>15} {'target':>7} {'rate/target':>11} "
          f"{'unsupported':>11} {'mean steps':>10} {'min':>6}")
    rows = []
    for suite, n, k, rate, lo, hi, target, uns, steps, wall in summary:
        print(f"{suite:16} {n:8d} {k:8d} {rate:7.1%} {f'[{lo:.1%}, {hi:.1%}]':>15} {target:7.0%} {rate / target:11.3f} "
              f"{uns:11d} {steps:10.0f} {wall / 60:6.1f}")
        rows.append(f"| {suite} | {n} | {k} | {rate:.1%} | [{lo:.1%}, {hi:.1%}] | {target:.0%} | {uns} | {steps:.0f} |")
    if args.markdown:
        head = ("| suite | episodes | successes | rate | 95% CI | target | unsupported | mean env steps |\n"
                "|---|---|---|---|---|---|---|---|\n")
        args.markdown.write_text(head + "\n".join(rows) + "\n\n" + "\n".join(md))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
