"""The tables of one run: success per task / suite / overall (with Wilson intervals), broken down by
the variant columns that vary, episode lengths, termination reasons and throughput.

Built on `nora_bench.results` (load, success_table); every table is a pandas DataFrame.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from nora_bench import UserError
from nora_bench.episode import ERROR, SUCCESS, TERMINATIONS
from nora_bench.results import load, success_table
from nora_bench.run.rundir import RunDir, newest_per_episode

# Record columns that may vary inside a run or between runs, and split the success tables when they do.
VARIANT_COLUMNS = ("chunk_exec", "distractors")
RATE_COLUMNS = ("success_rate", "ci95_low", "ci95_high")
ENV_INFO_COLUMNS = ("category", "partial_success")


@dataclass
class RunTables:
    """Everything `nora-bench report` shows about one run folder."""

    run_dir: Path
    episodes: pd.DataFrame  # one row per recorded episode (results.load), duplicates removed
    config: dict
    environment: dict
    varying: list[str]  # variant columns with more than one value in this run
    per_task: pd.DataFrame
    per_suite: pd.DataFrame
    overall: pd.DataFrame
    terminations: pd.DataFrame
    throughput: pd.DataFrame
    notes: list[str] = field(default_factory=list)  # what a reader must know (errors, missing episodes)
    per_category: pd.DataFrame | None = None  # when the env reports task categories

    def frames(self) -> dict[str, pd.DataFrame]:
        """The tables by file name, in reading order."""
        out = {"success_per_task": self.per_task, "success_per_suite": self.per_suite}
        if self.per_category is not None:
            out["success_per_category"] = self.per_category
        out.update({"success_overall": self.overall, "terminations": self.terminations, "throughput": self.throughput})
        return out


def load_run(run_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """`results.load` (each episode's newest record: rundir.newest_per_episode), with what it
    superseded said so."""
    df = load(run_dir)
    notes = []
    if df.empty:
        return df, notes
    with warnings.catch_warnings():  # load() has already warned about skipped lines
        warnings.simplefilter("ignore")
        superseded = newest_per_episode(RunDir(run_dir).records())[1]
    if "env_info" in df:
        # Facts an env reports per episode that tables use (the WidowX: task category, the share of
        # objects placed in multi-object tasks).
        for name in ENV_INFO_COLUMNS:
            values = df["env_info"].map(lambda d: d.get(name) if isinstance(d, dict) else None)
            if values.notna().any():
                df[name] = values
    retried = sum(r.get("termination") == "error" for r in superseded)
    if retried:
        notes.append(f"{retried} errored record(s) superseded by a later run of the same episode (--retry-errors)")
    if len(superseded) - retried:
        notes.append(f"{len(superseded) - retried} episode(s) recorded more than once; the last record of each is used")
    return df, notes


def _mean_length_of_successes(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    wins = df[df["termination"] == SUCCESS]
    cols = {"mean_steps_success": ("env_steps", "mean"), "mean_queries_success": ("queries", "mean")}
    if not by:
        return pd.DataFrame([{k: wins[c].mean() if len(wins) else math.nan for k, (c, _) in cols.items()}])
    return wins.groupby(by, dropna=False).agg(**cols).reset_index()


def rates_with_lengths(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """success_table(df, by) plus mean episode length of the successes and decode failures."""
    if by:
        table = success_table(df, by)
        lengths = _mean_length_of_successes(df, by)
        table = table.merge(lengths, on=by, how="left") if len(lengths) else table.assign(
            mean_steps_success=math.nan, mean_queries_success=math.nan)
        decode = df.groupby(by, dropna=False)["decode_failures"].sum().reset_index()
        table = table.merge(decode, on=by, how="left")
        if "partial_success" in df:
            partial = df.groupby(by, dropna=False)["partial_success"].mean().rename("mean_partial_success")
            table = table.merge(partial.reset_index(), on=by, how="left")
        return table
    table = success_table(df.assign(scope="all"), ["scope"])
    table = pd.concat([table, _mean_length_of_successes(df, [])], axis=1)
    table["decode_failures"] = int(df["decode_failures"].sum())
    if "partial_success" in df:
        table["mean_partial_success"] = df["partial_success"].mean()
    return table


def task_names(df: pd.DataFrame) -> pd.Series:
    """(suite, task_id) -> task name (the first non-empty one recorded)."""
    return df.groupby(["suite", "task_id"])["task"].agg(lambda s: next((x for x in s if x), ""))


def varying_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in VARIANT_COLUMNS if c in df and df[c].nunique(dropna=False) > 1]


def termination_table(df: pd.DataFrame) -> pd.DataFrame:
    """Episodes per termination reason, per suite and in all, plus decode failures and retries."""
    def row(g: pd.DataFrame, suite: str) -> dict:
        counts = g["termination"].value_counts()
        out = {"suite": suite, "episodes": len(g)}
        out.update({t: int(counts.get(t, 0)) for t in TERMINATIONS})
        # Reasons a later harness may add are counted too, never dropped.
        out.update({t: int(n) for t, n in counts.items() if t not in TERMINATIONS})
        out["episodes_with_decode_failures"] = int((g["decode_failures"] > 0).sum())
        out["decode_failures"] = int(g["decode_failures"].sum())
        out["retried_episodes"] = int((g["attempts"] > 1).sum()) if "attempts" in g else 0
        return out

    rows = [row(g, s) for s, g in df.groupby("suite", sort=True)]
    if len(rows) != 1:
        rows.append(row(df, "all"))
    return pd.DataFrame(rows).fillna(0)


def _parse_time(text) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None


def throughput_table(df: pd.DataFrame, environment: dict) -> pd.DataFrame:
    """Throughput as (metric, value, note) rows: wall-clock rates and where the time went."""
    rows: list[tuple[str, float, str]] = []
    start = _parse_time(environment.get("created"))
    ends = [t for t in (_parse_time(x) for x in df.get("finished_at", [])) if t is not None]
    span = (max(ends) - start).total_seconds() if start and ends else math.nan
    n, steps, queries = len(df), int(df["env_steps"].sum()), int(df["queries"].sum())
    wall = df["time_wall_s"].sum() if "time_wall_s" in df else math.nan

    def col_mean(c: str) -> float:
        return float(df[c].mean()) if c in df and df[c].notna().any() else math.nan

    def per(num: float, den: float) -> float:
        return num / den if den and not math.isnan(den) and den > 0 else math.nan

    rows += [
        ("episodes", n, "recorded episodes"),
        ("env_steps", steps, "env steps executed (settle steps not counted)"),
        ("policy_queries", queries, ""),
        ("span_s", span, "run folder created -> last episode finished (includes pauses of a resumed run)"),
        ("episodes_per_min", per(60 * n, span), "over span_s"),
        ("env_steps_per_s", per(steps, span), "over span_s, all workers together"),
        ("workers", int(df["worker"].nunique()) if "worker" in df else math.nan, "distinct worker names seen"),
        ("episode_time_s", wall, "sum of episode wall times"),
        ("parallelism", per(wall, span), "episode_time_s / span_s"),
        ("mean_episode_s", col_mean("time_wall_s"), ""),
        ("mean_reset_s", col_mean("time_reset_s"), "env reset + init state, per episode"),
        ("mean_settle_s", col_mean("time_settle_s"), "settle (wait) steps, per episode"),
        ("env_ms_per_step", 1000 * per(df.get("time_env_s", pd.Series(dtype=float)).sum(), steps), ""),
        ("policy_ms_per_query", 1000 * per(df.get("time_policy_s", pd.Series(dtype=float)).sum(), queries), ""),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "note"])


def expected_keys(config: dict) -> set[str]:
    """The episode keys a run's config asks for (as the scheduler names them)."""
    suite = (config.get("suite") or {}).get("name", "")
    return {f"{suite}/task{t:03d}/trial{i:02d}" for t in config.get("tasks", []) for i in config.get("trials", [])}


def run_tables(run_dir: str | Path) -> RunTables:
    """All tables of a run folder. Raises UserError for a folder that is not a run or holds no episode."""
    rd = RunDir(run_dir)
    df, notes = load_run(run_dir)
    if df.empty:
        raise UserError(f"{run_dir} holds no finished episode yet: run `nora-bench run ... --out {run_dir}` first")
    config, environment = rd.read_config() or {}, rd.read_environment()
    varying = varying_columns(df)

    per_task = rates_with_lengths(df, ["suite", "task_id", *varying])
    names = task_names(df)
    per_task.insert(2, "task", [names.get((s, t), "") for s, t in zip(per_task["suite"], per_task["task_id"])])
    per_suite = rates_with_lengths(df, ["suite", *varying])
    if not varying:  # the anytime-valid interval beside Wilson's (runs with a recorded random order)
        from nora_bench.results import add_anytime, anytime_intervals

        intervals = anytime_intervals(run_dir)
        per_task, per_suite = add_anytime(per_task, intervals, "task"), add_anytime(per_suite, intervals, "suite")
    overall = rates_with_lengths(df, [])
    if varying:
        overall = pd.concat([overall, rates_with_lengths(df, varying).assign(scope="all")], ignore_index=True)
        overall = overall[["scope", *varying] + [c for c in overall.columns if c not in ("scope", *varying)]]

    errored = int((df["termination"] == ERROR).sum())
    if errored:
        notes.append(f"{errored} episode(s) errored (no outcome): counted apart and left out of the rates")
    missing = expected_keys(config) - set(df["key"])
    if missing:
        notes.append(f"incomplete run: {len(missing)} of {len(expected_keys(config))} configured episodes are not "
                     f"recorded yet (resume with `nora-bench run ... --resume {run_dir}`)")
    for c in varying:
        notes.append(f"{c} varies in this run ({', '.join(map(str, sorted(df[c].unique())))}): tables are split by it")
    per_category = rates_with_lengths(df.fillna({"category": "-"}), ["suite", "category", *varying]) \
        if "category" in df else None
    return RunTables(Path(run_dir), df, config, environment, varying, per_task, per_suite, overall,
                     termination_table(df), throughput_table(df, environment), notes, per_category)


def episode_order(df: pd.DataFrame) -> pd.DataFrame:
    """Episodes sorted for review: failures and errors first, then by suite, task and trial."""
    rank = df["termination"].map(lambda t: 2 if t == SUCCESS else (0 if t == ERROR else 1))
    return df.assign(_rank=rank).sort_values(["_rank", "suite", "task_id", "trial", "key"]).drop(columns="_rank")


def run_summary(config: dict, environment: dict) -> list[tuple[str, str]]:
    """(label, value) lines saying what a run was and how to repeat it."""
    suite, policy = config.get("suite") or {}, config.get("policy") or {}
    versions = environment.get("versions") or {}
    return [
        ("suite", f"{suite.get('name', '')} (benchmark {suite.get('benchmark', '')})"),
        ("policy", str(policy.get("name", "")) + (f", checkpoint {policy['checkpoint']}" if policy.get("checkpoint") else "")),
        ("protocol", f"chunk rule {config.get('chunk_exec')}, step limit {config.get('max_steps')} {config.get('step_unit')}, "
                     f"settle steps {config.get('num_steps_wait')}, distractors {config.get('distractors')}, "
                     f"seed {config.get('seed')}"),
        ("episodes asked", f"tasks {config.get('tasks')} x trials {config.get('trials')}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
        ("harness", f"{environment.get('harness_version')}, git {environment.get('git_commit')}, created "
                    f"{environment.get('created')} on {environment.get('host')}"),
        ("command", " ".join(map(str, environment.get("command") or []))),
    ]


# -- formatting -----------------------------------------------------------------------------------

def pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def display_frame(table: pd.DataFrame, spaced: bool = False) -> pd.DataFrame:
    """A copy for humans: rate and interval as percentages in one column, numbers rounded; `spaced`
    writes column names with spaces (they can wrap)."""
    out = table.copy()
    if "success_rate" in out:
        pos = list(out.columns).index("success_rate")
        ci = [f"[{pct(lo)}, {pct(hi)}]" for lo, hi in zip(out["ci95_low"], out["ci95_high"])]
        out = out.drop(columns=list(RATE_COLUMNS))
        out.insert(pos, "success", [pct(x) for x in table["success_rate"]])
        out.insert(pos + 1, "95% CI", ci)
    if "cs95_low" in out:  # the anytime-valid interval (nora_bench.sequential), beside Wilson's
        pos = list(out.columns).index("cs95_low")
        cs = [f"[{pct(lo)}, {pct(hi)}]" for lo, hi in zip(table["cs95_low"], table["cs95_high"])]
        out = out.drop(columns=["cs95_low", "cs95_high"])
        out.insert(pos, "anytime 95%", cs)
    for c in out.columns:
        if out[c].dtype.kind == "f":
            out[c] = [("-" if math.isnan(v) else f"{v:.4g}") if isinstance(v, float) else v for v in out[c]]
    if spaced:
        out.columns = [str(c).replace("_", " ") for c in out.columns]
    return out


def to_markdown(table: pd.DataFrame) -> str:
    return display_frame(table, spaced=True).to_markdown(index=False)
