"""The comparison page of `nora-bench compare`: the tables, then paired episodes side by side (the
baseline's and the other run's video of the same init state), discordant pairs first.

One self-contained HTML file that opens from disk; videos are linked relatively and load lazily.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from nora_bench.episode import SUCCESS
from nora_bench.report.html import CSS, JS_LAZY_VIDEOS, _card, _e, _table

PAIR_CSS = """
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.5rem;background:#fff;border:1px solid #ddd;padding:.5rem;
 border-radius:4px;margin:.6rem 0} .pair.discordant{border:2px solid #d68910}
.pair h4{grid-column:1 / span 2;margin:0;font-size:.9rem} .pair .side{font-size:.8rem;color:#555}
#pairs{max-width:70rem}
"""

PAIR_JS = """
(() => {
  const pairs = Array.from(document.querySelectorAll('#pairs .pair'));
  const only = document.getElementById('f-disc'), count = document.getElementById('count');
  function apply() {
    let shown = 0;
    for (const p of pairs) { p.hidden = only.checked && p.dataset.kind !== 'discordant'; if (!p.hidden) shown++; }
    count.textContent = shown + ' of ' + pairs.length + ' pairs shown';
  }
  only.addEventListener('change', apply);
  apply();
})();
"""

KIND_RANK = {"discordant": 0, "both failed": 1, "both succeeded": 2}


def _records(df: pd.DataFrame) -> dict[str, dict]:
    return {r["key"]: r for r in df.astype(object).where(pd.notna(df), None).to_dict("records")}


def pairs(base: pd.DataFrame, run: pd.DataFrame) -> list[tuple[str, str, dict, dict]]:
    """(kind, key, baseline record, run record) for every episode both runs have, discordant first,
    then both failed, then both succeeded; by key within each."""
    a, b = _records(base), _records(run)
    out = []
    for key in sorted(set(a) & set(b)):
        sa, sb = a[key]["termination"] == SUCCESS, b[key]["termination"] == SUCCESS
        kind = "discordant" if sa != sb else ("both succeeded" if sa else "both failed")
        out.append((kind, key, a[key], b[key]))
    return sorted(out, key=lambda p: (KIND_RANK[p[0]], p[1]))


def comparison_page(comparison, page_path: Path) -> str:
    page_dir = page_path.parent
    base = comparison.runs[0]
    title = "nora-bench comparison: " + " vs ".join(r.label for r in comparison.runs)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}{PAIR_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
             '<div class="meta">' + "<br>".join(f"{_e(r.label)}: <code>{_e(r.path)}</code>, policy {_e(r.policy)}"
                                                + (" (baseline)" if r is base else "") for r in comparison.runs) + "</div>"]
    if comparison.warnings:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(w)}</li>" for w in comparison.warnings) + "</ul>")
    parts.append("<h2>Paired statistics (per task, suite and all)</h2>")
    parts.append(_table(comparison.paired) if not comparison.paired.empty else "<p>no paired episodes</p>")
    parts += ["<h2>Overall</h2>", _table(comparison.overall), "<h2>Per task</h2>", _table(comparison.per_task)]
    counts = {}
    parts.append('<h2 id="episodes">Paired episodes</h2>')
    parts.append('<div class="filters"><label><input type="checkbox" id="f-disc"> discordant pairs only</label>'
                 '<span id="count"></span></div>')
    parts.append('<p class="meta">Each pair: the same task and init state, the baseline on the left. Discordant pairs '
                 "(one run succeeded, the other failed) first, then both failed, then both succeeded.</p>")
    parts.append('<div id="pairs">')
    for run in comparison.runs[1:]:
        for kind, key, ra, rb in pairs(base.episodes, run.episodes):
            counts[kind] = counts.get(kind, 0) + 1
            parts.append(f'<div class="pair {"discordant" if kind == "discordant" else ""}" data-kind="{_e(kind)}" '
                         f'data-key="{_e(key)}" data-run="{_e(run.label)}"><h4>{_e(key)}: {_e(kind)}</h4>'
                         f'<div><div class="side">{_e(base.label)} (baseline)</div>{_card(ra, base.path, page_dir)}</div>'
                         f'<div><div class="side">{_e(run.label)}</div>{_card(rb, run.path, page_dir)}</div></div>')
    parts.append("</div>")
    summary = {"pairs": sum(counts.values()), **counts}
    parts.append('<script type="application/json" id="summary">' + json.dumps(summary).replace("</", "<\\/") + "</script>")
    parts.append(f"<script>{PAIR_JS}{JS_LAZY_VIDEOS}</script></body></html>")
    return "\n".join(parts)


def write_comparison_page(comparison, page_path: str | Path) -> Path:
    page_path = Path(page_path)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = page_path.with_suffix(".html.part")
    tmp.write_text(comparison_page(comparison, page_path), encoding="utf-8")
    os.replace(tmp, page_path)
    return page_path
