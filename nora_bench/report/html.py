"""The static review page of a run: tables, plots and one card per episode with its video.

One self-contained HTML file that opens from disk (no server): videos and plots are linked by
relative paths. Every text that comes from tasks, configs or records is escaped.
"""

from __future__ import annotations

import json
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from nora_bench.episode import ERROR, SUCCESS
from nora_bench.report.tables import RunTables, display_frame, episode_order, pct, run_summary, task_names

TABLE_TITLES = {"success_per_task": "Success per task", "success_per_suite": "Success per suite",
                "success_per_category": "Success per task category",
                "success_overall": "Success overall", "terminations": "Termination reasons",
                "throughput": "Throughput"}

CSS = """
body{font-family:system-ui,sans-serif;margin:0 1.5rem 2rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:1rem 0 .3rem} h2{font-size:1.15rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #ddd}
.meta{font-size:.85rem;color:#444} .meta code{background:#eee;padding:0 .2rem}
.notes li{color:#8a5300}
table.tbl{border-collapse:collapse;font-size:.8rem;margin:.4rem 0 1rem;background:#fff}
table.tbl th,table.tbl td{border:1px solid #ddd;padding:.2rem .45rem;vertical-align:top}
table.tbl .num{text-align:right} table.tbl .txt{text-align:left;max-width:32rem;overflow-wrap:break-word}
.scroll{overflow-x:auto} nav{margin:.4rem 0;font-size:.9rem} .headline{font-size:1.05rem;margin:.4rem 0}
table.tbl th{background:#f0f0f0}
.plots img{max-width:100%;border:1px solid #ddd;background:#fff;margin:.3rem 0}
.filters{position:sticky;top:0;background:#fafafa;padding:.6rem 0;z-index:2;display:flex;gap:1rem;
 flex-wrap:wrap;align-items:center;border-bottom:1px solid #ddd;font-size:.9rem}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:.8rem;margin-top:.8rem}
.card{background:#fff;border:1px solid #ddd;border-left:6px solid #999;border-radius:4px;padding:.5rem;
 font-size:.82rem;display:flex;flex-direction:column;gap:.25rem;overflow-wrap:break-word;min-width:0}
.card.success{border-left-color:#2e8b57} .card.failure{border-left-color:#c0392b} .card.error{border-left-color:#7d3c98}
.card video{width:100%;aspect-ratio:1;background:#222}
.card .novideo{aspect-ratio:3;display:flex;align-items:center;justify-content:center;background:#eee;color:#666}
.badge{display:inline-block;padding:0 .4rem;border-radius:3px;color:#fff;font-size:.75rem}
.badge.success{background:#2e8b57} .badge.failure{background:#c0392b} .badge.error{background:#7d3c98}
.instr{font-weight:600} .key{font-family:monospace;color:#555}
pre.err{white-space:pre-wrap;background:#fbeeee;padding:.3rem;margin:0;max-height:8rem;overflow:auto}
pre.info{white-space:pre-wrap;margin:0;max-height:10rem;overflow:auto;font-size:.75rem}
[hidden]{display:none !important}
table.grid{border-collapse:separate;border-spacing:2px;font-size:.7rem;margin:.3rem 0 1rem}
table.grid th{font-weight:normal;color:#555;padding:0 .3rem;text-align:right;white-space:nowrap}
table.grid td{width:1.1rem;height:1.1rem;padding:0}
table.grid a.cell{display:block;width:100%;height:100%;border-radius:2px;background:#ddd}
table.grid a.cell.success{background:#2e8b57} table.grid a.cell.failure{background:#c0392b}
table.grid a.cell.error{background:#7d3c98} table.grid a.cell:hover{outline:2px solid #222}
table.grid a.cell.marked{outline:2px solid #f1c40f;outline-offset:-1px}
.card.target{box-shadow:0 0 0 3px #1f6fd1}
"""

# Load a video only when it comes near the screen: a page can have hundreds.
JS_LAZY_VIDEOS = """
(() => {
  const load = v => { if (!v.src) { v.preload = 'metadata'; v.src = v.dataset.src; } };
  const videos = document.querySelectorAll('video[data-src]');
  if ('IntersectionObserver' in window) {
    const io = new IntersectionObserver(es => es.forEach(e => { if (e.isIntersecting) { load(e.target); io.unobserve(e.target); } }),
                                        {rootMargin: '400px'});
    videos.forEach(v => io.observe(v));
  } else { videos.forEach(load); }
  videos.forEach(v => v.addEventListener('error', () => {
    const p = document.createElement('div'); p.className = 'novideo';
    p.textContent = 'video could not be played: ' + v.dataset.src; v.replaceWith(p);
  }));
})();
"""

JS = """
(() => {
  const cards = Array.from(document.querySelectorAll('#cards .card'));
  const f = {fail: document.getElementById('f-fail'), suite: document.getElementById('f-suite'),
             task: document.getElementById('f-task'), term: document.getElementById('f-term')};
  const count = document.getElementById('count');
  function apply() {
    let shown = 0;
    for (const c of cards) {
      const ok = (!f.fail.checked || c.dataset.outcome !== 'success') &&
                 (!f.suite.value || c.dataset.suite === f.suite.value) &&
                 (!f.task.value || c.dataset.task === f.task.value) &&
                 (!f.term.value || c.dataset.termination === f.term.value);
      c.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown + ' of ' + cards.length + ' episodes shown';
  }
  for (const el of Object.values(f)) el.addEventListener('change', apply);
  // Success grid: a click shows the episode's card (clearing filters that hide it) and plays its video.
  document.querySelectorAll('table.grid a.cell[data-key][href="#"]').forEach(a => a.addEventListener('click', ev => {
    ev.preventDefault();
    const card = cards.find(c => c.dataset.key === a.dataset.key);
    if (!card) return;
    if (card.hidden) { f.fail.checked = false; f.suite.value = ''; f.task.value = ''; f.term.value = ''; apply(); }
    cards.forEach(c => c.classList.remove('target'));
    card.classList.add('target');
    card.scrollIntoView({block: 'center'});
    const v = card.querySelector('video[data-src]');
    if (v) { if (!v.src) { v.preload = 'auto'; v.src = v.dataset.src; } v.play().catch(() => {}); }
  }));
  apply();
})();
"""


def _e(x) -> str:
    return escape("" if x is None else str(x), quote=True)


def _outcome(termination: str) -> str:
    return "success" if termination == SUCCESS else ("error" if termination == ERROR else "failure")


def _rel(target: Path, page_dir: Path) -> str:
    return quote(Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix())


def _num(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _card(r: dict, run_dir: Path, page_dir: Path) -> str:
    outcome = _outcome(r["termination"])
    video = r.get("video")
    if isinstance(video, str) and video:
        if (run_dir / video).is_file():
            media = (f'<video controls muted playsinline preload="none" data-src="{_e(_rel(run_dir / video, page_dir))}">'
                     f"</video>")
        else:
            media = f'<div class="novideo">video file missing: {_e(video)}</div>'
    else:
        media = '<div class="novideo">no video recorded</div>'
    length = f"{r.get('env_steps', 0)} env steps, {r.get('queries', 0)} queries (limit {r.get('max_steps')} {_e(r.get('step_unit'))})"
    lines = [
        f'<div class="card {outcome}" data-outcome="{outcome}" data-suite="{_e(r["suite"])}" '
        f'data-task="{_e(r["suite"])}/{int(r["task_id"])}" data-termination="{_e(r["termination"])}" data-key="{_e(r["key"])}">',
        f'<div><span class="badge {outcome}">{_e(outcome)}</span> <span class="key">{_e(r["key"])}</span></div>',
        media,
        f'<div class="instr">{_e(r.get("instruction") or r.get("task"))}</div>',
        f'<div>task {int(r["task_id"])}: {_wrap(r.get("task"))}</div>',
        f'<div>trial {_e(r.get("trial"))}, init state {_e(r.get("init_state"))}, seed {_e(r.get("seed"))}, '
        f'chunk rule {_e(r.get("chunk_exec"))}, distractors {_e(r.get("distractors"))}</div>',
        f"<div>length: {_e(length)}</div>",
        f"<div>termination: <b>{_e(r['termination'])}</b>; wall {_e(_num(r.get('time_wall_s')))} s"
        + (f"; attempts {_e(r.get('attempts'))}" if (r.get("attempts") or 1) > 1 else "") + "</div>",
    ]
    if r.get("decode_failures"):
        reasons = list(dict.fromkeys(r.get("failure_reasons") or []))
        lines.append(f"<div>decode failures: {int(r['decode_failures'])}</div>"
                     + (f'<pre class="err">{_e(chr(10).join(reasons[:5]))}</pre>' if reasons else ""))
    if r.get("error"):
        lines.append(f'<pre class="err">{_e(r["error"])}</pre>')
    info = r.get("env_info")
    if isinstance(info, dict) and info:
        lines.append(f'<details><summary>env info</summary><pre class="info">'
                     f'{_e(json.dumps(info, indent=1, default=str))}</pre></details>')
    lines.append("</div>")
    return "\n".join(lines)


def _wrap(text) -> str:
    """Escaped text that may break after underscores (task names are long snake_case identifiers)."""
    return _e(text).replace("_", "_<wbr>")


def _table(frame: pd.DataFrame) -> str:
    """An escaped HTML table; numeric columns right-aligned, text left-aligned and wrapped."""
    shown = display_frame(frame)
    numeric = [frame[c].dtype.kind in "iuf" if c in frame else c in ("success", "95% CI") for c in shown.columns]
    head = "".join(f'<th class="{"num" if n else "txt"}">{_e(str(c).replace("_", " "))}</th>'
                   for c, n in zip(shown.columns, numeric))
    rows = "".join("<tr>" + "".join(f'<td class="num">{_e(v)}</td>' if n else f'<td class="txt">{_wrap(v)}</td>'
                                    for v, n in zip(row, numeric)) + "</tr>" for row in shown.itertuples(index=False))
    return f'<div class="scroll"><table class="tbl"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _options(values: list[tuple[str, str]], all_label: str) -> str:
    return f'<option value="">{_e(all_label)}</option>' + "".join(
        f'<option value="{_e(v)}">{_e(label)}</option>' for v, label in values)


def success_grid(df: pd.DataFrame, video_href=None, marked=None, by: str = "suite",
                 intro: str = "Click a cell to open its episode and video.") -> str:
    """Per suite (or per `by` value), a task x init-state grid: one cell per episode, coloured by outcome.
    A click opens the episode's card and video (review page) or, given `video_href(record) -> href | None`,
    the video itself. Cells whose record `marked(record)` is true get an outline. Shows at a glance which init states fail."""
    parts = ['<h2 id="grid">Success grid (task x init state)</h2>',
             '<p class="meta">One cell per episode: green success, red failure, purple error, grey not recorded. '
             f"{_e(intro)}</p>"]
    for name, g in df.groupby(by, sort=True):
        states = sorted(int(x) for x in g["init_state"].unique())
        names = g.groupby("task_id")["task"].agg(lambda x: next((t for t in x if t), ""))
        cells = {(int(t), int(i)): r for t, i, r in zip(g["task_id"], g["init_state"], g.to_dict("records"))}
        head = "".join(f"<th>{i}</th>" for i in states)
        rows = []
        for task in sorted(int(t) for t in g["task_id"].unique()):
            tds = []
            for i in states:
                r = cells.get((task, i))
                if r is None:
                    tds.append('<td><a class="cell missing" title="not recorded"></a></td>')
                    continue
                outcome = _outcome(r["termination"])
                tip = f"{r['key']}: {r['termination']}, init state {i}"
                href = video_href(r) if video_href else "#"
                target = ' target="_blank"' if video_href and href else ""
                mark = " marked" if marked and marked(r) else ""
                tds.append(f'<td><a class="cell {outcome}{mark}" href="{_e(href or "#")}"{target} data-key="{_e(r["key"])}" '
                           f'data-outcome="{outcome}" title="{_e(tip)}" aria-label="{_e(tip)}"></a></td>')
            rows.append(f'<tr><th title="{_e(names.get(task, ""))}">task {task}</th>{"".join(tds)}</tr>')
        k = int((g["termination"] == SUCCESS).sum())
        parts.append(f'<h3>{_e(name)}: {k}/{len(g)}</h3><div class="scroll"><table class="grid" data-suite="{_e(name)}">'
                     f'<thead><tr><th>init state</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')
    return "\n".join(parts)


def review_page(tables: RunTables, page_path: Path, plots: dict[str, Path]) -> str:
    """The HTML text of the review page that will be written to `page_path`."""
    page_dir, run_dir, df = page_path.parent, tables.run_dir, tables.episodes
    cfg, env = tables.config, tables.environment
    title = f"nora-bench review: {run_dir.resolve().name}"
    meta = [f"{_e(k)}: <code>{_e(v)}</code>" for k, v in run_summary(cfg, env)]
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
             '<div class="meta">' + "<br>".join(meta) + "</div>"]
    o = tables.overall.iloc[0]
    failures = int((df["termination"] != SUCCESS).sum())
    parts.append(f'<div class="headline"><b>{int(o["successes"])}/{int(o["episodes"] - o["errored"])}</b> successes '
                 f'({_e(pct(o["success_rate"]))}, 95% CI {_e(pct(o["ci95_low"]))} to {_e(pct(o["ci95_high"]))})'
                 + (f', {int(o["errored"])} errored' if o["errored"] else "") + "</div>")
    parts.append(f'<nav><a href="#grid">Grid</a> · <a href="#tables">Tables</a> · <a href="#plots">Plots</a> · <a href="#episodes">Episodes</a> '
                 f"({len(df)}, {failures} not successful)</nav>")
    if tables.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in tables.notes) + "</ul>")
    parts.append(success_grid(df))
    parts.append('<h2 id="tables">Tables</h2>')
    for name, frame in tables.frames().items():
        parts.append(f"<h3>{_e(TABLE_TITLES.get(name, name))}</h3>")
        parts.append(_table(frame))
    if plots:
        parts.append('<h2 id="plots">Plots</h2><div class="plots">')
        parts += [f'<div><img alt="{_e(n)}" src="{_e(_rel(p, page_dir))}"></div>' for n, p in plots.items()]
        parts.append("</div>")

    ordered = episode_order(df)
    suites = sorted(df["suite"].unique())
    task_opts = [(f"{s}/{int(t)}", f"{s} #{int(t)}: {n}") for (s, t), n in task_names(df).sort_index().items()]
    terms = sorted(df["termination"].unique())
    parts += [
        '<h2 id="episodes">Episodes</h2>',
        '<div class="filters">',
        '<label><input type="checkbox" id="f-fail"> failures only</label>',
        f'<label>suite <select id="f-suite">{_options([(s, s) for s in suites], "all suites")}</select></label>',
        f'<label>task <select id="f-task">{_options(task_opts, "all tasks")}</select></label>',
        f'<label>termination <select id="f-term">{_options([(t, t) for t in terms], "any")}</select></label>',
        '<span id="count"></span></div>',
        '<p class="meta">Sorted for review: errored and failed episodes first, then successes; '
        "within each, by suite, task and trial.</p>",
        '<div id="cards">',
    ]
    records = ordered.astype(object).where(pd.notna(ordered), None).to_dict("records")
    parts += [_card(r, run_dir, page_dir) for r in records]
    parts.append("</div>")
    # Counts for scripts and tests, as inert JSON (</ cannot end the script element).
    summary = {"episodes": len(df), "failures": int((df["termination"] != SUCCESS).sum())}
    parts.append('<script type="application/json" id="summary">' + json.dumps(summary).replace("</", "<\\/") + "</script>")
    parts.append(f"<script>{JS}{JS_LAZY_VIDEOS}</script></body></html>")
    return "\n".join(parts)


def write_review_page(tables: RunTables, page_path: str | Path, plots: dict[str, Path] | None = None) -> Path:
    page_path = Path(page_path)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    text = review_page(tables, page_path, plots or {})
    tmp = page_path.with_suffix(".html.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, page_path)
    return page_path
