"""Robustness report: a base run and perturbed runs of the same policy (suite families, the --distractors
ablation) -> success per family and level with Wilson intervals, the drop from the base suite with a test,
a heatmap (base suite x family), a drop plot, and a page that shows first the episodes the perturbation broke.

Pairing: an episode is paired with a base episode only when both ran the same scene, that is the same
benchmark, task and init state (the distractors ablation keeps the benchmark's init states): McNemar's exact
test on the pairs. LIBERO-PRO regenerated the init states of its perturbed suites, so those are compared
unpaired (Fisher's exact test on the pooled counts), and the table says which test it used and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nora_bench import UserError
from nora_bench.config import SuiteSpec
from nora_bench.report.stats import fisher_p, mcnemar_p
from nora_bench.report.tables import load_run
from nora_bench.results import wilson_interval
from nora_bench.run.rundir import RunDir

BASE = "base"
GROUP = ["base_suite", "family", "level", "suite"]


@dataclass
class Robustness:
    runs: list[Path]
    episodes: pd.DataFrame  # every run's episodes, with run, family, level, base_suite, benchmark
    per_family: pd.DataFrame  # one row per (base suite, family, level, suite): rates, drop, test
    broken: pd.DataFrame  # perturbed failures whose base counterpart succeeded (video pairs)
    notes: list[str] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"robustness_per_family": self.per_family, "robustness_broken": self.broken}


def _read(path: Path) -> pd.DataFrame:
    rd = RunDir(path)
    if not rd.exists():
        raise UserError(f"{path} is not a nora-bench run folder (no {RunDir.CONFIG}): pass folders `nora-bench run` wrote")
    df, _ = load_run(path)
    if df.empty:
        raise UserError(f"{path} holds no finished episode yet: nothing to report")
    config = rd.read_config() or {}
    suite = config.get("suite") or {}
    spec = SuiteSpec(**{k: v for k, v in suite.items() if k in SuiteSpec.__dataclass_fields__})
    # Records written before families existed: derive the grouping from the run's config.
    derived = spec.perturbation(int(config.get("distractors") or 0))
    for col, value in derived.items():
        if col not in df or df[col].isna().all() or (col == "base_suite" and (df[col] == "").all()):
            df[col] = value
    df["benchmark"] = spec.benchmark or spec.name
    df["tasks_correspond"] = bool(spec.tasks_correspond)
    df["run"] = path.resolve().name
    df["run_dir"] = str(path)
    df["policy_name"] = (config.get("policy") or {}).get("name", "")
    return df


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["success"].notna()].assign(success=lambda d: d["success"].astype(bool))


def robustness(paths: list[str | Path]) -> Robustness:
    """Compare every perturbed run with the base run(s) of its base suite."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise UserError("a robustness report needs a base run and at least one perturbed run: "
                        "nora-bench report BASE_RUN PERTURBED_RUN [...]")
    df = pd.concat([_read(p) for p in paths], ignore_index=True)
    notes = []
    policies = sorted(set(df["policy_name"]))
    if len(policies) > 1:
        notes.append(f"the runs use different policies ({', '.join(policies)}): drops mix policy and perturbation")
    base = df[df["family"] == BASE]
    if base.empty:
        raise UserError("none of the runs is a base run (an unperturbed suite such as libero_spatial without "
                        "--distractors): pass one first")
    rows, broken = [], []
    for keys, g in df[df["family"] != BASE].groupby(GROUP, sort=True):
        base_suite, family, level, suite = keys
        b = base[base["base_suite"] == base_suite]
        row = {"base_suite": base_suite, "family": family, "level": level, "suite": suite,
               "runs": ", ".join(sorted(set(g["run"])))}
        pert = _scored(g)
        row.update(_rate("", pert))
        if b.empty:
            row.update({"base_rate": math.nan, "drop": math.nan, "test": "-", "p": math.nan,
                        "note": f"no base run of {base_suite} among the runs"})
            rows.append(row)
            continue
        bs = _scored(b)
        corresponds = bool(g["tasks_correspond"].iloc[0])
        same_scene = set(g["benchmark"]) == set(b["benchmark"])
        if same_scene:
            m = bs.merge(pert, on=["task_id", "init_state"], suffixes=("_base", "_pert"))
            only_base = int((m["success_base"] & ~m["success_pert"]).sum())
            only_pert = int((~m["success_base"] & m["success_pert"]).sum())
            row.update({"base_episodes": len(m), "base_successes": int(m["success_base"].sum()),
                        "base_rate": m["success_base"].mean() if len(m) else math.nan,
                        "pert_rate_on_pairs": m["success_pert"].mean() if len(m) else math.nan,
                        "test": f"McNemar, {len(m)} paired episodes", "pairs": len(m),
                        "only_base": only_base, "only_perturbed": only_pert,
                        "p": mcnemar_p(only_base, only_pert) if len(m) else math.nan,
                        "note": "same benchmark, task and init state"})
            row["drop"] = row["base_rate"] - row["pert_rate_on_pairs"]
            for r in m[m["success_base"] & ~m["success_pert"]].to_dict("records"):
                broken.append(_broken(r, family, level, suite, "same scene and init state"))
        else:
            ref = bs[bs["task_id"].isin(pert["task_id"])] if corresponds else bs
            k, n = int(ref["success"].sum()), len(ref)
            row.update({"base_episodes": n, "base_successes": k, "base_rate": k / n if n else math.nan,
                        "test": "Fisher, unpaired", "pairs": 0,
                        "p": fisher_p(k, n, row["successes"], row["episodes"]),
                        "note": (f"init states of {suite} are not the base's (LIBERO-PRO regenerated them): unpaired"
                                 + ("" if corresponds else "; its tasks are not the base's tasks, pooled over all"))})
            row["drop"] = row["base_rate"] - row["success_rate"]
            if corresponds:
                # Same task and init-state index (not the same scene): what the perturbation may have broken.
                m = ref.merge(pert, on=["task_id", "trial"], suffixes=("_base", "_pert"))
                for r in m[m["success_base"] & ~m["success_pert"]].to_dict("records"):
                    broken.append(_broken(r, family, level, suite, "same task and trial index, regenerated init state"))
        rows.append(row)
    for suite_name, g in base.groupby("suite"):
        s = _scored(g)
        rows.insert(0, {"base_suite": suite_name if g["base_suite"].iloc[0] == "" else g["base_suite"].iloc[0],
                        "family": BASE, "level": "", "suite": suite_name, "runs": ", ".join(sorted(set(g["run"]))),
                        **_rate("", s), "base_rate": math.nan, "drop": math.nan, "test": "-", "p": math.nan,
                        "note": "the base"})
    per_family = pd.DataFrame(rows)
    cols = ["base_suite", "family", "level", "suite", "episodes", "successes", "success_rate", "ci95_low", "ci95_high",
            "base_episodes", "base_successes", "base_rate", "pert_rate_on_pairs", "drop", "test", "p", "pairs", "only_base",
            "only_perturbed", "note", "runs"]
    per_family = per_family.reindex(columns=[c for c in cols if c in per_family.columns])
    broken_df = pd.DataFrame(broken, columns=["base_suite", "family", "level", "suite", "task_id", "task",
                                              "trial", "init_state_base", "init_state_pert", "matched_by",
                                              "termination", "key_base", "key_pert", "video_base", "video_pert",
                                              "run_base", "run_pert", "instruction_base", "instruction_pert"])
    return Robustness(paths, df, per_family, broken_df, notes)


def _rate(prefix: str, scored: pd.DataFrame) -> dict:
    k, n = int(scored["success"].sum()), len(scored)
    lo, hi = wilson_interval(k, n)
    return {f"{prefix}episodes": n, f"{prefix}successes": k, f"{prefix}success_rate": k / n if n else math.nan,
            f"{prefix}ci95_low": lo, f"{prefix}ci95_high": hi}


def _broken(r: dict, family: str, level: str, suite: str, how: str) -> dict:
    return {"base_suite": r.get("base_suite_base", ""), "family": family, "level": level, "suite": suite,
            "task_id": int(r["task_id"]), "task": r.get("task_pert") or r.get("task_base"),
            "trial": int(r.get("trial", r.get("trial_pert", 0))),
            "init_state_base": int(r.get("init_state_base", r.get("init_state", -1))),
            "init_state_pert": int(r.get("init_state_pert", r.get("init_state", -1))), "matched_by": how,
            "termination": r["termination_pert"], "key_base": r["key_base"], "key_pert": r["key_pert"],
            "video_base": r.get("video_base"), "video_pert": r.get("video_pert"),
            "run_base": r["run_dir_base"], "run_pert": r["run_dir_pert"],
            "instruction_base": r.get("instruction_base"), "instruction_pert": r.get("instruction_pert")}


# -- plots ------------------------------------------------------------------------------------------

def _column_label(family: str, level: str) -> str:
    return family + (f" {level}" if level else "")


def plot_heatmap(per_family: pd.DataFrame, path: Path) -> Path:
    """Success rate per base suite (rows) and family/level (columns), the base first; cells say rate and drop."""
    import numpy as np
    from matplotlib.figure import Figure

    t = per_family.assign(column=[_column_label(f, lv) for f, lv in zip(per_family["family"], per_family["level"])])
    columns = [BASE] + sorted(c for c in t["column"].unique() if c != BASE)
    rows = sorted(t["base_suite"].unique())
    grid = np.full((len(rows), len(columns)), np.nan)
    text = [["" for _ in columns] for _ in rows]
    for r in t.to_dict("records"):
        i, j = rows.index(r["base_suite"]), columns.index(r["column"])
        grid[i, j] = 100 * r["success_rate"]
        drop = r.get("drop")
        text[i][j] = f"{100 * r['success_rate']:.0f}%\n{r['successes']}/{r['episodes']}" + (
            f"\n-{100 * drop:.0f} pts" if isinstance(drop, float) and not math.isnan(drop) and drop > 0 else "")
    fig = Figure(figsize=(1.6 + 1.25 * len(columns), 1.2 + 0.9 * len(rows)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, text[i][j] or "not run", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title("Success rate by suite and perturbation family")
    fig.colorbar(im, ax=ax, label="success rate (%)")
    fig.savefig(path, dpi=100)
    return path


def plot_drops(per_family: pd.DataFrame, path: Path) -> Path:
    """Base rate -> perturbed rate per (suite, family, level), with 95% Wilson intervals on the perturbed
    rate; the line is the drop, the label its test and p-value."""
    from matplotlib.figure import Figure

    t = per_family[per_family["family"] != BASE].sort_values(["base_suite", "family", "level"])
    labels = [f"{s}: {_column_label(f, lv)}" for s, f, lv in zip(t["base_suite"], t["family"], t["level"])]
    fig = Figure(figsize=(9, 1.2 + 0.4 * max(1, len(t))), layout="constrained")
    ax = fig.subplots()
    for y, r in enumerate(t.to_dict("records")):
        rate, base = 100 * r["success_rate"], 100 * r["base_rate"] if not math.isnan(r["base_rate"]) else math.nan
        if not math.isnan(base):
            ax.plot([base, rate], [y, y], color="grey", zorder=1)
            ax.scatter([base], [y], color="black", marker="|", s=200, zorder=2, label="base" if y == 0 else None)
        ax.errorbar([rate], [y], xerr=[[rate - 100 * r["ci95_low"]], [100 * r["ci95_high"] - rate]], fmt="o",
                    color="tab:red", capsize=3, zorder=3, label="perturbed (95% CI)" if y == 0 else None)
        p = r.get("p")
        test = str(r.get("test", "")).split(",")[0]
        ax.text(103, y, f"{test} p={p:.3g}" if isinstance(p, float) and not math.isnan(p) else "", va="center", fontsize=7)
    ax.set_yticks(range(len(t)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("success rate (%): base -> perturbed")
    ax.set_title("Drop from the base suite")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=100)
    return path


# -- page -------------------------------------------------------------------------------------------

def _media(run_dir: str, video, page_dir: Path, label: str) -> str:
    from nora_bench.report.html import _e, _rel

    if isinstance(video, str) and video and (Path(run_dir) / video).is_file():
        return (f'<figure><figcaption>{_e(label)}</figcaption><video controls muted playsinline preload="none" '
                f'data-src="{_e(_rel(Path(run_dir) / video, page_dir))}"></video></figure>')
    return f'<figure><figcaption>{_e(label)}</figcaption><div class="novideo">no video recorded</div></figure>'


def robustness_page(rob: Robustness, page_path: Path, plots: dict[str, Path]) -> str:
    from nora_bench.report.html import CSS, JS_LAZY_VIDEOS, _e, _rel, _table

    page_dir = page_path.parent
    title = "nora-bench robustness: " + ", ".join(p.resolve().name for p in rob.runs)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}.pair{{display:grid;grid-template-columns:1fr 1fr;gap:.4rem}} figure{{margin:0}}"
             f"figcaption{{font-size:.75rem;color:#555}}</style></head><body>", f"<h1>{_e(title)}</h1>",
             '<nav><a href="#broken">Broken by a perturbation</a> · <a href="#grid">Grids</a> · <a href="#tables">Tables</a> · '
             '<a href="#plots">Plots</a></nav>']
    if rob.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in rob.notes) + "</ul>")
    parts.append(f'<h2 id="broken">Succeeded on the base scene, failed perturbed ({len(rob.broken)})</h2>')
    parts.append('<p class="meta">Episode pairs: the base episode (left) and the perturbed one (right) of the same '
                 "task, matched as each card says. LIBERO-PRO regenerated its init states, so its pairs share task "
                 "and trial index, not the exact scene; the distractors ablation keeps the scene.</p>")
    parts.append('<div id="cards">')
    for r in rob.broken.to_dict("records"):
        parts.append(
            f'<div class="card failure broken" data-family="{_e(r["family"])}" data-key="{_e(r["key_pert"])}">'
            f'<div><span class="badge failure">{_e(_column_label(r["family"], r["level"]))}</span> '
            f'<span class="key">{_e(r["key_pert"])}</span></div>'
            f'<div class="pair">{_media(r["run_base"], r["video_base"], page_dir, "base: success")}'
            f'{_media(r["run_pert"], r["video_pert"], page_dir, "perturbed: " + str(r["termination"]))}</div>'
            f'<div>base: <span class="instr">{_e(r["instruction_base"])}</span></div>'
            f'<div>perturbed: <span class="instr">{_e(r["instruction_pert"])}</span></div>'
            f'<div>task {int(r["task_id"])}, trial {int(r["trial"])}; {_e(r["matched_by"])}</div></div>')
    parts.append("</div>")
    from nora_bench.report.html import success_grid

    def href(r: dict) -> str | None:
        video = r.get("video")
        if isinstance(video, str) and video and (Path(r["run_dir"]) / video).is_file():
            return _rel(Path(r["run_dir"]) / video, page_dir)
        return None

    grid_df = rob.episodes.assign(grid=[f"{run}: {suite}" for run, suite in zip(rob.episodes["run"], rob.episodes["suite"])])
    broken = set(zip(rob.broken["run_pert"], rob.broken["key_pert"]))
    parts.append(success_grid(grid_df, video_href=href, marked=lambda r: (r["run_dir"], r["key"]) in broken, by="grid",
                              intro="Each run's episodes; outlined in yellow: failed here, succeeded on the base. "
                                    "Click a cell to open its video."))
    parts.append('<h2 id="tables">Success per family and level, drop from the base</h2>')
    parts.append('<p class="meta">drop = base rate - perturbed rate (on the pairs for McNemar). Tests: McNemar\'s '
                 "exact test on paired episodes (same benchmark, task and init state), else Fisher's exact test "
                 "on the pooled counts; the note says why.</p>")
    parts.append(_table(rob.per_family))
    if plots:
        parts.append('<h2 id="plots">Plots</h2><div class="plots">')
        parts += [f'<div><img alt="{_e(n)}" src="{_e(_rel(p, page_dir))}"></div>' for n, p in plots.items()]
        parts.append("</div>")
    parts.append(f"<script>{JS_LAZY_VIDEOS}</script></body></html>")
    return "\n".join(parts)


def write_robustness(rob: Robustness, out: str | Path, plots: bool = True, html: bool = True):
    """CSV + Markdown tables, the heatmap and drop plot, and robustness.html in `out`."""
    import os

    from nora_bench.report.tables import to_markdown
    from nora_bench.report.writer import Written

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = Written(folder)
    for name, frame in rob.frames().items():
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        written.tables.append(path)
    md = ["# nora-bench robustness report", "", "Runs: " + ", ".join(f"`{p}`" for p in rob.runs), ""]
    md += [f"- {n}" for n in rob.notes] + ([""] if rob.notes else [])
    md += ["## Success per family and level, drop from the base", "", to_markdown(rob.per_family), ""]
    shown = rob.broken[["family", "level", "suite", "task_id", "trial", "matched_by", "key_base", "key_pert"]]
    md += [f"## Succeeded on the base scene, failed perturbed ({len(rob.broken)})", "", to_markdown(shown), ""]
    written.markdown = folder / "robustness.md"
    written.markdown.write_text("\n".join(md))
    if plots:
        written.plots["robustness_heatmap"] = plot_heatmap(rob.per_family, folder / "robustness_heatmap.png")
        if (rob.per_family["family"] != BASE).any():
            written.plots["robustness_drop"] = plot_drops(rob.per_family, folder / "robustness_drop.png")
    if html:
        page = folder / "robustness.html"
        tmp = page.with_suffix(".html.part")
        tmp.write_text(robustness_page(rob, page, written.plots), encoding="utf-8")
        os.replace(tmp, page)
        written.page = page
    return written
