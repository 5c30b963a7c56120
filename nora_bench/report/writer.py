"""Write a run's report (CSV + Markdown tables, PNG plots, the HTML review page) and a comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nora_bench.report.compare import Comparison, variant_columns_between
from nora_bench.report.html import TABLE_TITLES, write_review_page
from nora_bench.report.plots import plot_success_vs, plot_task_success
from nora_bench.report.tables import RunTables, rates_with_lengths, run_summary, to_markdown
from nora_bench.run.rundir import RunDir

REPORT_DIR = "report"
REVIEW_PAGE = "review.html"


@dataclass
class Written:
    """The files a report or comparison wrote."""

    folder: Path
    tables: list[Path] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    page: Path | None = None
    markdown: Path | None = None


def _save_tables(frames: dict[str, pd.DataFrame], folder: Path, written: Written) -> None:
    for name, frame in frames.items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.tables.append(path)


def run_plots(tables: RunTables, folder: Path) -> dict[str, Path]:
    plots = {"success_per_task": plot_task_success(
        tables.per_task, folder / "success_per_task.png",
        series=tables.varying[0] if len(tables.varying) == 1 else None,
        title=f"Success per task: {tables.run_dir.resolve().name}")}
    for col in tables.varying:
        by = tables.overall[tables.overall[col].notna()] if col in tables.overall else None
        if by is not None and len(tables.varying) == 1:
            plots[f"success_vs_{col}"] = plot_success_vs(by, col, folder / f"success_vs_{col}.png")
        elif by is not None:
            # Several variant columns vary together: one line per value of the other one.
            other = next(c for c in tables.varying if c != col)
            plots[f"success_vs_{col}"] = plot_success_vs(rates_with_lengths(tables.episodes, [col, other]), col,
                                                         folder / f"success_vs_{col}.png", series=other)
    return plots


def write_run_report(tables: RunTables, out: str | Path | None = None, plots: bool = True,
                     html: bool = True) -> Written:
    """Tables as CSV and one Markdown file, plots, and the review page.

    Default places: <run>/report/ for tables and plots, <run>/review.html for the page; with `out`,
    everything goes into `out`.
    """
    folder = Path(out) if out else tables.run_dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = Written(folder)
    _save_tables(tables.frames(), folder, written)
    md = [f"# nora-bench report: {tables.run_dir.resolve().name}", ""]
    md += [f"- {k}: `{v}`" for k, v in run_summary(tables.config, tables.environment)] + [""]
    md += [f"- {n}" for n in tables.notes] + ([""] if tables.notes else [])
    for name, frame in tables.frames().items():
        md += [f"## {TABLE_TITLES.get(name, name)}", "", to_markdown(frame), ""]
    written.markdown = folder / "report.md"
    written.markdown.write_text("\n".join(md))
    if plots:
        written.plots = run_plots(tables, folder)
    if html:
        page = (Path(out) if out else tables.run_dir) / REVIEW_PAGE
        written.page = write_review_page(tables, page, written.plots)
    return written


def write_comparison(comparison: Comparison, out: str | Path, plots: bool = True, html: bool = True) -> Written:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = Written(folder)
    _save_tables(comparison.frames(), folder, written)
    md = ["# nora-bench comparison", "", "Runs (the first is the baseline):", ""]
    for r in comparison.runs:
        md += [f"### {r.label}", "", f"- folder: `{r.path}`"]
        md += [f"- {k}: `{v}`" for k, v in run_summary(r.config, RunDir(r.path).read_environment())] + [""]
    md += [f"- WARNING: {w}" for w in comparison.warnings] + ([""] if comparison.warnings else [])
    md += ["## Overall", "", to_markdown(comparison.overall), "", "## Per task", "", to_markdown(comparison.per_task), ""]
    if not comparison.paired.empty:
        md += ["## Paired against the baseline (same episodes)", "", to_markdown(comparison.paired), ""]
    written.markdown = folder / "compare.md"
    written.markdown.write_text("\n".join(md))
    if html:
        from nora_bench.report.compare_html import write_comparison_page

        written.page = write_comparison_page(comparison, folder / "compare.html")
    if plots:
        written.plots["compare_per_task"] = plot_task_success(comparison.long, folder / "compare_per_task.png",
                                                              series="run", title="Success per task by run")
        for col in variant_columns_between(comparison.runs):
            table = comparison.overall.copy()
            table["errored"] = 0  # overall counts are already of scored episodes
            table[col] = table[col].astype(str)
            written.plots[f"compare_vs_{col}"] = plot_success_vs(table, col, folder / f"compare_vs_{col}.png",
                                                                       series="run")
    return written
