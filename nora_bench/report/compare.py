"""Runs side by side: success per task and overall, differences against the first run (the baseline)
with significance tests, and warnings when the runs do not share a protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nora_bench import UserError
from nora_bench.report.stats import fisher_p, holm, mcnemar_p
from nora_bench.report.tables import VARIANT_COLUMNS, load_run, task_names, varying_columns
from nora_bench.results import success_table, wilson_interval
from nora_bench.run.rundir import SIMULATOR_PACKAGES, RunDir

# Settings that change what a success rate means; a difference is warned about.
PROTOCOL_SETTINGS = ("max_steps", "step_unit", "num_steps_wait", "chunk_exec", "distractors")
# Settings that decide the scene of an episode: paired episodes must share them.
SCENE_SETTINGS = ("scene", "scene_seed")
SIGN_TEST = "sign-test e-process on discordant pairs (anytime-valid)"
MCNEMAR = "McNemar exact (fixed number of episodes)"
SUITE_SETTINGS = ("benchmark", "camera_size")
# Packages whose version can move success rates (simulator first, then the model stack).
COMPARED_PACKAGES = (*SIMULATOR_PACKAGES, "numpy", "torch", "transformers", "tokenizers")


@dataclass
class RunInfo:
    label: str
    path: Path
    episodes: pd.DataFrame
    config: dict
    versions: dict

    @property
    def policy(self) -> str:
        p = self.config.get("policy") or {}
        return str(p.get("name", "")) + (f" ({p['checkpoint']})" if p.get("checkpoint") else "")

    def setting(self, name: str):
        if name in SUITE_SETTINGS:
            return (self.config.get("suite") or {}).get(name)
        if name in self.config:
            return self.config[name]
        values = self.episodes[name].unique() if name in self.episodes else []
        return values[0] if len(values) == 1 else None


@dataclass
class Comparison:
    runs: list[RunInfo]
    per_task: pd.DataFrame  # wide: one row per task, columns per run, diff and p against the baseline
    overall: pd.DataFrame  # one row per run: pooled over the tasks all runs have
    long: pd.DataFrame  # one row per (run, suite, task): counts, rate and Wilson interval (for plots)
    warnings: list[str] = field(default_factory=list)
    # one row per (run, level, suite, task) against the baseline: paired counts and both tests
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"compare_per_task": self.per_task, "compare_overall": self.overall, "compare_paired": self.paired,
                "compare_long": self.long}


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name or str(p) for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def read_run(path: str | Path, label: str) -> RunInfo:
    """A run's episodes keyed by benchmark, task and init state, so that variants of one benchmark
    (libero_spatial and libero_spatial_distractors) line up task by task and episode by episode."""
    rd = RunDir(path)
    df, _ = load_run(path)
    if df.empty:
        raise UserError(f"{path} holds no finished episode yet: nothing to compare")
    config = rd.read_config() or {}
    suite = config.get("suite") or {}
    if suite.get("benchmark"):
        df = df.assign(run_suite=df["suite"], run_key=df["key"])
        df["suite"] = df["suite"].where(df["suite"] != suite.get("name"), suite["benchmark"])
        df["key"] = [f"{s}/task{int(t):03d}/init{int(i):02d}" for s, t, i in zip(df["suite"], df["task_id"], df["init_state"])]
    versions = rd.read_environment().get("versions") or (df["versions"].iloc[0] if "versions" in df else {})
    return RunInfo(label, Path(path), df, config, dict(versions))


def protocol_warnings(runs: list[RunInfo]) -> list[str]:
    """Every protocol setting and package version on which the runs differ."""
    out = []
    for name in (*PROTOCOL_SETTINGS, *SUITE_SETTINGS):
        values = [r.setting(name) for r in runs]
        if len({str(v) for v in values}) > 1:
            out.append(f"runs differ in {name}: " + ", ".join(f"{r.label}={v}" for r, v in zip(runs, values)))
    for pkg in COMPARED_PACKAGES:
        values = [r.versions.get(pkg, "unknown") for r in runs]
        if len(set(values)) > 1:
            kind = "simulator" if pkg in SIMULATOR_PACKAGES else "package"
            out.append(f"runs differ in {kind} version {pkg}: " + ", ".join(f"{r.label}={v}" for r, v in zip(runs, values)))
    for r in runs:
        inner = varying_columns(r.episodes)
        if inner:
            out.append(f"{r.label} mixes several {', '.join(inner)} values; its per-task rates pool them")
    return out


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    t = success_table(df, ["suite", "task_id"])
    t["scored"] = t["episodes"] - t["errored"]
    return t


def compare_runs(paths: list[str | Path]) -> Comparison:
    """Compare two or more run folders; the first is the baseline of every difference and test."""
    if len(paths) < 2:
        raise UserError("compare needs at least two run folders: nora-bench compare RUN_A RUN_B [...]")
    paths = [Path(p) for p in paths]
    runs = [read_run(p, label) for p, label in zip(paths, _labels(paths))]
    warnings = protocol_warnings(runs)
    suites = sorted({str(x) for r in runs for x in r.episodes.get("run_suite", r.episodes["suite"]).unique()})
    if len(suites) > 1:
        warnings.append(f"runs use different suites ({', '.join(suites)}): tasks are matched by benchmark, "
                        "task id and init state")

    counts = {r.label: _counts(r.episodes) for r in runs}
    long = pd.concat([c.assign(run=label) for label, c in counts.items()], ignore_index=True)
    names = pd.concat([task_names(r.episodes) for r in runs])
    names = names[~names.index.duplicated()]
    long.insert(3, "task", [names.get((s, t), "") for s, t in zip(long["suite"], long["task_id"])])
    long = long[["run"] + [c for c in long.columns if c != "run"]]

    task_sets = [set(zip(c["suite"], c["task_id"])) for c in counts.values()]
    common = set.intersection(*task_sets)
    if any(s != common for s in task_sets):
        warnings.append(f"runs cover different tasks: only the {len(common)} task(s) all runs have are pooled overall")
    key_sets = [set(r.episodes["key"]) for r in runs]
    if any(k != key_sets[0] for k in key_sets):
        warnings.append("runs cover different episodes (tasks or init states): per-task rates rest on different trials")

    wide = long[["suite", "task_id", "task"]].drop_duplicates(["suite", "task_id"]).sort_values(["suite", "task_id"])
    base = runs[0].label
    for label, c in counts.items():
        part = c[["suite", "task_id", "successes", "scored", "success_rate"]].rename(columns={
            "successes": f"{label} successes", "scored": f"{label} episodes", "success_rate": f"{label} rate"})
        wide = wide.merge(part, on=["suite", "task_id"], how="left")
    for label in counts:
        if label == base:
            continue
        k1, n1 = wide[f"{base} successes"], wide[f"{base} episodes"]
        k2, n2 = wide[f"{label} successes"], wide[f"{label} episodes"]
        wide[f"diff {label} - {base}"] = wide[f"{label} rate"] - wide[f"{base} rate"]
        ps = [fisher_p(int(a), int(b), int(c), int(d)) if not any(map(pd.isna, (a, b, c, d))) else math.nan
              for a, b, c, d in zip(k1, n1, k2, n2)]
        wide[f"p {label} vs {base}"] = ps
        wide[f"p_holm {label} vs {base}"] = holm(ps)
    wide = wide.reset_index(drop=True)

    rows = []
    base_pool = None
    for r in runs:
        c = counts[r.label]
        c = c[[(s, t) in common for s, t in zip(c["suite"], c["task_id"])]]
        k, n = int(c["successes"].sum()), int(c["scored"].sum())
        row = {"run": r.label, "policy": r.policy, **{s: r.setting(s) for s in PROTOCOL_SETTINGS},
               "tasks": len(c), "episodes": n, "successes": k, "success_rate": k / n if n else math.nan}
        row["ci95_low"], row["ci95_high"] = wilson_interval(k, n)
        if base_pool is None:
            base_pool = (k, n)
            row.update({"diff": math.nan, "p_fisher": math.nan, "paired_episodes": math.nan, "p_mcnemar": math.nan})
        else:
            row["diff"] = row["success_rate"] - base_pool[0] / base_pool[1] if n and base_pool[1] else math.nan
            row["p_fisher"] = fisher_p(base_pool[0], base_pool[1], k, n)
            row.update(_paired(runs[0].episodes, r.episodes))
        rows.append(row)
    overall = pd.DataFrame(rows)
    paired_rows = []
    for r in runs[1:]:
        problems = pairing_problems(runs[0], r)
        warnings += problems
        paired_rows += paired_table(runs[0], r, paired=not problems)
    return Comparison(runs, wide, overall, long, warnings, pd.DataFrame(paired_rows))


def pairing_problems(base: RunInfo, run: RunInfo) -> list[str]:
    """Why two runs' episodes are not paired (same scene, same init state, same recipe), if they are not."""
    out = []
    for name in SCENE_SETTINGS:
        a, b = base.config.get(name), run.config.get(name)
        if a != b:
            out.append(f"not paired: {run.label} and {base.label} differ in {name} ({b} vs {a}): different scenes")
    seeds = base.episodes.set_index("key")["seed"]
    other = run.episodes.set_index("key")["seed"]
    common = seeds.index.intersection(other.index)
    differ = int((seeds[common] != other[common]).sum())
    if differ:
        out.append(f"not paired: {differ} of {len(common)} common episodes of {run.label} have other scene seeds than "
                   f"{base.label}'s (run them with --versus {base.path} to pair them)")
    if not len(common):
        out.append(f"not paired: {run.label} and {base.label} share no episode")
    # Different recipes (step limit, chunk rule, ...) are said by protocol_warnings: the paired test then
    # compares policy and recipe together, which may be the point of the comparison.
    return out


def _order(run: RunInfo, base: RunInfo) -> list[str]:
    """The order pairs are tested in: the run's recorded order (a --versus run has the baseline's),
    else the baseline's, else task then trial (keys as `read_run` names them)."""
    for info in (run, base):
        recorded = RunDir(info.path).read_json(RunDir.ORDER)
        if recorded:
            eps = info.episodes
            names = dict(zip(eps["run_key"], eps["key"])) if "run_key" in eps else {}
            return [names.get(k, k) for k in recorded["keys"]]
    return sorted(run.episodes["key"])


def paired_table(base: RunInfo, run: RunInfo, paired: bool = True) -> list[dict]:
    """Paired statistics of `run` against `base` per task, per suite and over all: pairs both scored,
    discordant counts, McNemar's exact p (valid for a fixed number of episodes) and the sequential sign
    test's anytime-valid p and decision (valid however the runs were stopped), with which test applies."""
    from nora_bench.sequential import DEFAULT_ALPHA, sign_test

    sa = base.episodes[base.episodes["success"].notna()].set_index("key")
    sb = run.episodes[run.episodes["success"].notna()].set_index("key")
    order = [k for k in _order(run, base) if k in sa.index and k in sb.index]
    order += sorted(set(sa.index.intersection(sb.index)) - set(order))
    stopped = any((RunDir(i.path).read_json(RunDir.STOPPING) or {}).get("status") == "stopped" for i in (base, run))
    rows = []

    def row(level: str, suite: str, task, keys: list[str]) -> dict:
        a = sa.loc[keys, "success"].astype(bool).to_numpy() if keys else []
        b = sb.loc[keys, "success"].astype(bool).to_numpy() if keys else []
        signs = [int(y) - int(x) for x, y in zip(a, b)]
        only_b, only_a = signs.count(1), signs.count(-1)
        seq = sign_test(signs, DEFAULT_ALPHA)
        n = len(keys)
        return {"run": run.label, "baseline": base.label, "level": level, "suite": suite, "task_id": task,
                "pairs": n, "both": int(sum(x and y for x, y in zip(a, b))), "only_baseline": only_a, "only_this": only_b,
                "diff": (only_b - only_a) / n if n else math.nan,
                "p_mcnemar": mcnemar_p(only_a, only_b) if n else math.nan,
                "e_value": seq.e_value, "p_anytime": seq.p_value,
                "decision": {1: "this better", -1: "baseline better", 0: "undecided"}[seq.decision] if paired else "not paired",
                "test": SIGN_TEST if stopped else f"{MCNEMAR}; {SIGN_TEST}"}

    suite_of = {k: s for k, s in zip(sa.index, sa["suite"])}
    task_of = {k: int(t) for k, t in zip(sa.index, sa["task_id"])}
    for (suite, task) in sorted({(suite_of[k], task_of[k]) for k in order}):
        rows.append(row("task", suite, task, [k for k in order if suite_of[k] == suite and task_of[k] == task]))
    for suite in sorted({suite_of[k] for k in order}):
        rows.append(row("suite", suite, None, [k for k in order if suite_of[k] == suite]))
    rows.append(row("all", "all", None, order))
    return rows


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """McNemar on the episodes both runs scored (same suite, task and init state)."""
    sa = a[a["success"].notna()].set_index("key")["success"].astype(bool)
    sb = b[b["success"].notna()].set_index("key")["success"].astype(bool)
    keys = sa.index.intersection(sb.index)
    only_a = int((sa[keys] & ~sb[keys]).sum())
    only_b = int((~sa[keys] & sb[keys]).sum())
    return {"paired_episodes": len(keys), "only_base": only_a, "only_this": only_b,
            "p_mcnemar": mcnemar_p(only_a, only_b) if len(keys) else math.nan}


def variant_columns_between(runs: list[RunInfo]) -> list[str]:
    """Variant settings that differ between the runs (what a 'success vs ...' plot can show)."""
    return [c for c in VARIANT_COLUMNS if len({str(r.setting(c)) for r in runs}) > 1]
