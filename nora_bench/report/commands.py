"""The `nora-bench report` and `nora-bench compare` commands (registered on the CLI app by `register`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nora_bench import UserError

if TYPE_CHECKING:
    import pandas as pd

console = Console()
err_console = Console(stderr=True)
TASK_CHARS = 36


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _unwritable(e: OSError, folder) -> str:
    return f"cannot write {e.filename or folder}: {e.strerror or e}; choose a writable --out folder"


def print_frame(title: str, frame: pd.DataFrame) -> None:
    from nora_bench.report.tables import display_frame

    shown = display_frame(frame, spaced=True)
    if "task" in shown:  # full names are in the CSV, Markdown and HTML; the terminal gets a short one
        shown["task"] = [t if len(str(t)) <= TASK_CHARS else str(t)[: TASK_CHARS - 1] + "…" for t in shown["task"]]
    t = Table(title=title, title_justify="left")
    for c in shown.columns:
        t.add_column(escape(str(c)), justify="left" if c in ("suite", "task", "run", "policy", "metric", "note", "scope", "category") else "right",
                     overflow="fold", no_wrap=c in ("suite", "run", "metric"),
                     min_width=min(TASK_CHARS, 24) if c == "task" else None)
    for row in shown.itertuples(index=False):
        t.add_row(*["-" if v is None else escape(str(v)) for v in row])
    console.print(t)


def report(
    run_dirs: List[Path] = typer.Argument(..., help="A run folder written by `nora-bench run`; or a base run and perturbed runs of the same policy (robustness report)."),
    out: Optional[Path] = typer.Option(None, help="Write everything here (default: RUN_DIR/report/ and RUN_DIR/review.html; for several runs robustness-<runs> beside the first)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    html: bool = typer.Option(True, "--html/--no-html", help="Write the HTML review page."),
) -> None:
    """Success tables (per task, suite, overall; 95% Wilson intervals), terminations, throughput, plots
    and an HTML page to review every episode's video. Several runs (a base run and perturbed ones): the
    robustness report, success per perturbation family and level and the drop from the base."""
    if len(run_dirs) > 1:
        return _robustness_report(run_dirs, out, plots, html)
    run_dir = run_dirs[0]
    from nora_bench.report.html import TABLE_TITLES
    from nora_bench.report.tables import run_tables
    from nora_bench.report.writer import write_run_report

    try:
        tables = run_tables(run_dir)
        written = write_run_report(tables, out, plots=plots, html=html)
    except UserError as e:
        _fail(str(e))
    except OSError as e:
        _fail(_unwritable(e, out or run_dir))
    for name, frame in tables.frames().items():
        print_frame(TABLE_TITLES.get(name, name), frame)
    for note in tables.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    console.print(f"tables: {written.folder} (CSV, {written.markdown.name})", highlight=False, markup=False)
    for path in written.plots.values():
        console.print(f"plot: {path}", highlight=False, markup=False)
    if written.page:
        console.print(f"review page: {written.page.resolve().as_uri()}", highlight=False, markup=False)


def _robustness_report(run_dirs: list[Path], out: Path | None, plots: bool, html: bool) -> None:
    from nora_bench.report.robustness import robustness, write_robustness

    try:
        rob = robustness(run_dirs)
        if out is None:
            out = run_dirs[0].resolve().parent / ("robustness-" + "-".join(p.resolve().name for p in run_dirs))[:200]
        written = write_robustness(rob, out, plots=plots, html=html)
    except UserError as e:
        _fail(str(e))
    # The terminal gets the numbers; notes and run names are in the CSV, Markdown and page.
    print_frame("Robustness: success per family and level, drop from the base",
                rob.per_family.drop(columns=["runs", "note", "base_episodes", "base_successes", "only_base",
                                             "only_perturbed"], errors="ignore"))
    for note in rob.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"{len(rob.broken)} episode(s) succeeded on the base scene and failed perturbed", highlight=False)
    console.print(f"tables: {written.folder} (CSV, {written.markdown.name})", highlight=False)
    for path in written.plots.values():
        console.print(f"plot: {path}", highlight=False)
    if written.page:
        console.print(f"robustness page: {written.page.resolve().as_uri()}", highlight=False)


def compare(
    runs: List[Path] = typer.Argument(..., help="Two or more run folders; the first is the baseline."),
    out: Optional[Path] = typer.Option(None, help="Folder for CSV/Markdown/plots (default: compare-A-vs-B beside the first run)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    html: bool = typer.Option(True, "--html/--no-html", help="Write the HTML comparison page (paired episodes side by side)."),
) -> None:
    """Runs side by side per task: rates, differences against the first run, Fisher exact p-values
    (Holm-adjusted over tasks), paired statistics per task, suite and overall (McNemar exact and the
    anytime-valid sequential sign test, and which applies), and warnings when runs are not paired."""
    from nora_bench.report.compare import compare_runs
    from nora_bench.report.writer import write_comparison

    try:
        comparison = compare_runs(runs)
        if out is None:
            out = runs[0].resolve().parent / ("compare-" + "-vs-".join(comparison.labels))
        written = write_comparison(comparison, out, plots=plots, html=html)
    except UserError as e:
        _fail(str(e))
    except OSError as e:
        _fail(_unwritable(e, out))
    print_frame("Per task (diff and p against the first run)", comparison.per_task)
    print_frame("Overall (tasks all runs have)", comparison.overall)
    if not comparison.paired.empty:
        print_frame("Paired against the first run (same episodes): per task, suite and all", comparison.paired)
    for w in comparison.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False)
    console.print(f"written: {written.folder} (CSV, {written.markdown.name}"
                  + (", " + ", ".join(p.name for p in written.plots.values()) if written.plots else "") + ")",
                  highlight=False, markup=False)
    if written.page:
        console.print(f"comparison page: {written.page.resolve().as_uri()}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(compare)
