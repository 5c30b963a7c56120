"""PNG plots (matplotlib, no display needed): success per task with 95% Wilson intervals, and success
against a variant setting (chunk rule, distractor count)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nora_bench.report.tables import pct

LABEL_CHARS = 48


def _task_label(row) -> str:
    name = str(row.get("task") or "").replace("_", " ")
    name = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
    return f"{row['suite']} #{row['task_id']}" + (f": {name}" if name else "")


def _errors(t: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars from the Wilson bounds (zero where undefined)."""
    rate = t["success_rate"].to_numpy(float)
    lo = np.nan_to_num(rate - t["ci95_low"].to_numpy(float))
    hi = np.nan_to_num(t["ci95_high"].to_numpy(float) - rate)
    return 100 * np.vstack([lo, hi])


def plot_task_success(table: pd.DataFrame, path: str | Path, series: str | None = None, title: str = "") -> Path:
    """Horizontal bars of success per task with 95% intervals; one bar per `series` value per task."""
    path = Path(path)
    tasks = table.drop_duplicates(["suite", "task_id"]).sort_values(["suite", "task_id"])
    labels = [_task_label(r) for r in tasks.to_dict("records")]
    groups = list(dict.fromkeys(table[series])) if series else [None]
    height = 0.8 / len(groups)
    fig = Figure(figsize=(10, 1.2 + 0.35 * len(tasks) * max(1, len(groups) * 0.6)), layout="constrained")
    ax = fig.subplots()
    index = {(s, t): i for i, (s, t) in enumerate(zip(tasks["suite"], tasks["task_id"]))}
    for g_i, g in enumerate(groups):
        part = table if g is None else table[table[series] == g]
        y = np.array([index[(s, t)] for s, t in zip(part["suite"], part["task_id"])], float)
        y = y + (g_i - (len(groups) - 1) / 2) * height
        rate = 100 * part["success_rate"].to_numpy(float)
        ax.barh(y, np.nan_to_num(rate), height=height * 0.9, label=None if g is None else f"{series}={g}")
        ax.errorbar(np.nan_to_num(rate), y, xerr=_errors(part), fmt="none", ecolor="black", elinewidth=1, capsize=3)
        for yy, r, k, n in zip(y, part["success_rate"], part["successes"], part["episodes"] - part["errored"]):
            ax.text(101, yy, f"{pct(r)} ({k}/{n})", va="center", fontsize=8)
    ax.set_yticks(range(len(tasks)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 125)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("success rate (%) with 95% Wilson interval")
    ax.set_title(title or "Success per task")
    if series:
        ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=100)
    return path


def plot_success_vs(table: pd.DataFrame, x: str, path: str | Path, series: str | None = None,
                    title: str = "") -> Path:
    """Success rate (with 95% intervals) against the values of `x`, one line per `series` value."""
    path = Path(path)
    xs = sorted(table[x].unique(), key=lambda v: (isinstance(v, str), v))
    pos = {v: i for i, v in enumerate(xs)}
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for g in (list(dict.fromkeys(table[series])) if series else [None]):
        part = (table if g is None else table[table[series] == g]).copy()
        part["_x"] = part[x].map(pos)
        part = part.sort_values("_x")
        ax.errorbar(part["_x"], 100 * part["success_rate"], yerr=_errors(part), marker="o", capsize=4,
                    label=None if g is None else str(g))
        for xx, r, k, n in zip(part["_x"], part["success_rate"], part["successes"], part["episodes"] - part["errored"]):
            if not (isinstance(r, float) and math.isnan(r)):
                ax.annotate(f"{k}/{n}", (xx, 100 * r), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_ylim(0, 105)
    ax.set_xlabel(x)
    ax.set_ylabel("success rate (%)")
    ax.set_title(title or f"Success vs {x}")
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    return path
