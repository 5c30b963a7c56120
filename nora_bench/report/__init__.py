"""Reports of runs: tables (pandas), comparisons with significance tests, plots, the HTML review page.

From Python::

    from nora_bench.report import run_tables, compare_runs
    t = run_tables("results/my-run")      # t.per_task, t.per_suite, t.overall, t.terminations, t.throughput
    c = compare_runs(["results/a", "results/b"])   # c.per_task, c.overall, c.warnings
"""

from nora_bench.report.compare import Comparison, compare_runs
from nora_bench.report.tables import RunTables, run_tables
from nora_bench.report.writer import write_comparison, write_run_report

__all__ = ["Comparison", "RunTables", "compare_runs", "run_tables", "write_comparison", "write_run_report"]
