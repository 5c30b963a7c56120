"""Episode records -> pandas tables: success rates with counts and 95% Wilson intervals."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from nora_bench import UserError
from nora_bench.run.rundir import RunDir

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (NaN, NaN) when n == 0.

    The bounds always hold the rate: exactly 0 at 0 successes and exactly 1 at n (the closed form
    lands a rounding hair past them, e.g. 6.9e-18 for 0/50, which plots as a negative error bar).
    """
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else min(p, centre - half)
    hi = 1.0 if successes >= n else max(p, centre + half)
    return (lo, hi)


def load(run_dir: str | Path, history: bool = False) -> pd.DataFrame:
    """One row per episode of a run folder, its newest record (nested timings flattened to `time_*`).
    With `history`, one row per record, superseded ones too (an errored episode later re-run)."""
    rd = RunDir(run_dir)
    if not rd.exists():
        raise UserError(f"{run_dir} is not a nora-bench run folder (no {RunDir.CONFIG}): pass the folder `nora-bench run` wrote")
    rd.read_config()  # a garbled config.yaml is named here, not a traceback later
    records = rd.records() if history else rd.latest()
    df = pd.DataFrame.from_records(records)
    if df.empty:
        return df
    raw = df["timings"] if "timings" in df else pd.Series([None] * len(df))
    timings = pd.json_normalize([t if isinstance(t, dict) else {} for t in raw]).add_prefix("time_")
    df = pd.concat([df.drop(columns=["timings"], errors="ignore"), timings], axis=1)
    df["run"] = Path(run_dir).name
    return df


def success_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Success per group: episodes, successes, errored, rate and its 95% Wilson interval.

    Errored episodes (no outcome) are counted apart and left out of the rate: they are not failures
    of the policy, and they are never silently turned into zeros.
    """
    rows = []
    for keys, g in df.groupby(by, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        scored = g[g["success"].notna()]
        n, k = len(scored), int(scored["success"].astype(bool).sum())
        lo, hi = wilson_interval(k, n)
        rows.append({**dict(zip(by, keys)), "episodes": len(g), "successes": k, "errored": len(g) - n,
                     "success_rate": k / n if n else math.nan, "ci95_low": lo, "ci95_high": hi})
    return pd.DataFrame(rows)


def anytime_intervals(run_dir: str | Path, alpha: float = 0.05) -> dict | None:
    """Anytime-valid 95% intervals (nora_bench.sequential) of a run's rates per task and per suite,
    from its outcomes in its recorded order (the longest scored prefix: per task, or complete rounds
    for a suite). None for a run without a recorded random order (its prefixes are no fair sample) and
    for a complete run (nothing left to estimate: Wilson's interval is the one about the policy).

    {"task": {(suite, task_id): Interval}, "suite": {suite: Interval}}"""
    from nora_bench.sequential import suite_cs, task_cs

    rd = RunDir(run_dir)
    order = rd.read_json(RunDir.ORDER)
    if not order:
        return None
    outcome = {r["key"]: r.get("success") for r in rd.latest()}
    keys = order["keys"]
    if all(outcome.get(k) is not None for k in keys):
        # Every configured episode has its outcome: the interval for "the rate of this run's episodes" is
        # the observed rate itself, which beside Wilson's would read as certainty about the policy.
        return None
    task_of = {k: (k.split("/")[0], int(re.search(r"/task(\d+)/", k).group(1))) for k in keys}
    out: dict = {"task": {}, "suite": {}}
    by_task: dict = {}
    for k in keys:
        by_task.setdefault(task_of[k], []).append(k)
    for t, ks in by_task.items():
        prefix = []
        for k in ks:
            if outcome.get(k) is None:
                break
            prefix.append(bool(outcome[k]))
        out["task"][t] = task_cs(prefix, len(ks), alpha)
    for suite in dict.fromkeys(s for s, _ in by_task):
        ks = [k for k in keys if task_of[k][0] == suite]
        strata = len({task_of[k] for k in ks})
        sizes = {len(v) for (s, _), v in by_task.items() if s == suite}
        if len(sizes) != 1:
            continue
        rounds = []
        for r in range(len(ks) // strata):
            values = [outcome.get(k) for k in ks[r * strata:(r + 1) * strata]]
            if any(v is None for v in values):
                break
            rounds.append(sum(bool(v) for v in values))
        out["suite"][suite] = suite_cs(rounds, sizes.pop(), strata, alpha)
    return out


def add_anytime(table: pd.DataFrame, intervals: dict | None, level: str) -> pd.DataFrame:
    """Put the anytime-valid interval (columns cs95_low, cs95_high, cs95_episodes) beside Wilson's."""
    if intervals is None or table.empty:
        return table
    found = intervals[level]
    keys = [(s, t) for s, t in zip(table["suite"], table["task_id"])] if level == "task" else list(table["suite"])
    got = [found.get(k) for k in keys]
    pos = list(table.columns).index("ci95_high") + 1
    table = table.copy()
    table.insert(pos, "cs95_low", [g.low if g else math.nan for g in got])
    table.insert(pos + 1, "cs95_high", [g.high if g else math.nan for g in got])
    table.insert(pos + 2, "cs95_episodes", [g.n if g else 0 for g in got])
    return table


def task_table(df: pd.DataFrame) -> pd.DataFrame:
    by = ["suite", "task_id"]
    table = success_table(df, by)
    names = df.groupby(by)["task"].agg(lambda s: next((x for x in s if x), ""))
    table.insert(2, "task", [names.get(tuple(r)) for r in table[by].itertuples(index=False)])
    return table


def suite_table(df: pd.DataFrame) -> pd.DataFrame:
    return success_table(df, ["suite"])
