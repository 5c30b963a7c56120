"""`nora-bench selftest`: does this machine run a real evaluation end to end?

A short run of the scripted expert (real LIBERO simulator, real Ray env workers, videos on) and a
short run of the do-nothing `zero` policy, then plain checks: the simulator ran, frames rendered
into playable videos, the simulator's own success check said yes for the expert and no for the
zero policy, and the tables count what was run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _video_check(run: Path, df) -> Check:
    import imageio.v3 as iio

    paths = [run / v for v in df["video"].dropna()]
    if len(paths) != len(df):
        return Check("rendering and videos", False, f"{len(paths)} video(s) for {len(df)} episodes")
    shapes, dark = [], []
    for p in paths:
        frames = iio.imread(p)
        shapes.append(frames.shape)
        dark.append(float(frames.std()) < 5.0)  # a blank or black render has no contrast
    if any(dark):
        return Check("rendering and videos", False, f"{sum(dark)} video(s) look blank (no contrast)")
    return Check("rendering and videos", True,
                 f"{len(paths)} mp4 file(s) decode, e.g. {shapes[0][0]} frames of {shapes[0][1]}x{shapes[0][2]}")


def run_selftest(out: Path, suite: str = "libero_spatial", tasks: str = "0", trials: int = 2,
                 workers: int = 2) -> list[Check]:
    """Run the checks into run folders under `out`; returns them (nothing printed)."""
    from nora_bench.config import RunConfig
    from nora_bench.results import load, suite_table, task_table
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    checks: list[Check] = []
    expert = RunConfig.resolve(suite=suite, policy="scripted", tasks=tasks, trials=trials, video=True)
    Scheduler(expert, RunDir(out / "expert"), ExecOptions(workers=workers, progress=False)).run()
    df = load(out / "expert")
    n = len(expert.tasks) * len(expert.trials)
    errored = df[df["success"].isna()]
    checks.append(Check("simulator and Ray workers", len(df) == n and errored.empty,
                        f"{len(df)}/{n} episodes recorded, {len(errored)} errored"
                        + (f": {errored['error'].iloc[0]}" if len(errored) else "")))
    checks.append(_video_check(out / "expert", df))
    wins = int(df["success"].fillna(False).astype(bool).sum())
    steps = ", ".join(str(s) for s in df["env_steps"])
    checks.append(Check("success detection (expert succeeds)", wins == n,
                        f"the simulator's goal check passed in {wins}/{n} expert episodes (env steps: {steps})"))
    # The control: the same task with the do-nothing policy must not count as a success.
    zero = RunConfig.resolve(suite=suite, policy="zero", tasks=tasks.split(",")[0].split("-")[0], trials=1,
                             max_steps=30, video=False)
    Scheduler(zero, RunDir(out / "zero"), ExecOptions(in_process=True, progress=False)).run()
    z = load(out / "zero")
    z_ok = len(z) == 1 and z["success"].notna().iloc[0] and not bool(z["success"].iloc[0])
    checks.append(Check("success detection (doing nothing fails)", bool(z_ok),
                        f"zero policy, 30 steps: termination {z['termination'].iloc[0] if len(z) else 'missing'}"))
    tt, st = task_table(df), suite_table(df)
    rate = float(st["success_rate"].iloc[0]) if len(st) else float("nan")
    tables_ok = int(tt["episodes"].sum()) == n and len(tt) == len(expert.tasks) and abs(rate - wins / n) < 1e-9
    checks.append(Check("tables", tables_ok, f"{len(tt)} task row(s), {int(tt['episodes'].sum())} episodes, "
                                             f"suite success {rate:.0%}"))
    return checks


def selftest(
    out: Optional[Path] = typer.Option(None, help="Keep the run folders here (default: a temporary folder, removed)."),
    suite: str = typer.Option("libero_spatial", help="Suite to test on."),
    tasks: str = typer.Option("0", help="Task ids."),
    trials: int = typer.Option(2, help="Init states per task."),
    workers: int = typer.Option(2, help="Env workers."),
) -> None:
    """Check that the simulator, rendering, success detection, videos and tables work on this machine."""
    from rich.console import Console

    from nora_bench import UserError

    console = Console()
    console.print(f"selftest: scripted expert on {suite} task(s) {tasks} x {trials} trial(s), videos on; "
                  "then the zero policy as a control ...")
    try:
        if out is not None:
            checks = run_selftest(out, suite, tasks, trials, workers)
        else:
            with tempfile.TemporaryDirectory(prefix="nora-selftest-") as d:
                checks = run_selftest(Path(d), suite, tasks, trials, workers)
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2)
    for c in checks:
        mark = "[green]PASS[/]" if c.ok else "[bold red]FAIL[/]"
        console.print(f"{mark}  {c.name}: {c.detail}", highlight=False)
    if all(c.ok for c in checks):
        console.print("[bold green]selftest passed:[/] this machine runs real LIBERO evaluations end to end.")
    else:
        console.print("[bold red]selftest failed:[/] see the FAIL lines above.")
        raise typer.Exit(1)
