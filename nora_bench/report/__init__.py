"""Reports of runs: tables (pandas), comparisons with significance tests, plots, the HTML review page.

From Python::

    from nora_bench.report import run_tables, compare_runs
    t = run_tables("results/my-run")      # t.per_task, t.per_suite, t.overall, t.terminations, t.throughput
    c = compare_runs(["results/a", "results/b"])   # c.per_task, c.overall, c.warnings
"""

import importlib

# Imported on first use: scipy, matplotlib and pandas cost seconds, and the `nora-bench` command (which
# imports this package's `commands`) should answer a typo at once.
_WHERE = {"Comparison": "compare", "compare_runs": "compare", "RunTables": "tables", "run_tables": "tables",
          "write_comparison": "writer", "write_run_report": "writer"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"nora_bench.report.{_WHERE[name]}"), name)
