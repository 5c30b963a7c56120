"""Review page of a large run: lazy video loading (the page's design) vs every video preloading.

Builds a synthetic run folder (N episodes, each with a real 256x256 H.264 mp4 from the harness's
VideoWriter), times `report` (tables, plots, page), then opens the page in Debian's Chromium, both
variants side by side in alternating rounds, and prints ratios: time until the first screen of
videos is ready, videos fetched, and Chromium's memory.

    .venv/bin/python bench/bench_review_page.py [--episodes 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_run(folder: Path, n: int, frames: int) -> None:
    import numpy as np

    from nora_bench.config import RunConfig, load_policy_preset, load_suite
    from nora_bench.episode import EpisodeResult
    from nora_bench.run.rundir import RunDir, now, package_versions
    from nora_bench.video import VideoWriter

    tasks, trials = 10, (n + 9) // 10
    config = RunConfig(suite=dataclasses.asdict(load_suite("libero_spatial")), policy=load_policy_preset("zero"),
                       tasks=list(range(tasks)), trials=list(range(trials)), max_steps=220)
    rd = RunDir(folder)
    rd.open(config, package_versions())
    rng = np.random.default_rng(0)
    w = VideoWriter()
    for i in range(frames):
        w.add(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) // 4 + (i * 3) % 192)
    video = w.finish()
    for i in range(n):
        task, trial = i % tasks, i // tasks
        key = f"libero_spatial/task{task:03d}/trial{trial:02d}"
        win = bool(rng.random() < 0.6)
        rd.append(EpisodeResult(
            key=key, suite="libero_spatial", task_id=task, task=f"task_{task}", instruction=f"do task {task}",
            trial=trial, init_state=trial, seed=i, success=win, termination="success" if win else "step_limit",
            env_steps=frames - 1, queries=frames - 1, max_steps=220, video=rd.write_video(key, video),
            timings={"wall_s": 10.0, "env_s": 8.0, "policy_s": 1.0, "reset_s": 0.5, "settle_s": 0.5},
            finished_at=now(), versions=package_versions()).to_dict())


def chromium_rss_mb() -> float:
    import psutil

    procs = [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def measure(browser, page_path: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        t = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load", timeout=120000)
        loaded = time.perf_counter() - t
        page.locator("#episodes").scroll_into_view_if_needed()
        page.wait_for_function("""(() => { const vs = Array.from(document.querySelectorAll('video')).filter(v => {
              const r = v.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
              return vs.length > 0 && vs.every(v => v.readyState >= 2); })()""", timeout=120000, polling=50)
        first_screen = time.perf_counter() - t
        page.wait_for_timeout(3000)  # let eager preloading go on as it would while a user looks
        fetched = page.evaluate("Array.from(document.querySelectorAll('video')).filter(v => v.readyState >= 1).length")
        return {"load_s": loaded, "first_screen_s": first_screen, "videos_fetched": fetched, "rss_mb": chromium_rss_mb()}
    finally:
        page.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    from nora_bench.report import run_tables, write_run_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--frames", type=int, default=61)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        t = time.perf_counter()
        make_run(run, a.episodes, a.frames)
        print(f"synthetic run: {a.episodes} episodes, {a.frames}-frame 256x256 videos ({time.perf_counter() - t:.1f} s)")
        t = time.perf_counter()
        written = write_run_report(run_tables(run))
        report_s = time.perf_counter() - t
        page_mb = written.page.stat().st_size / 2**20
        print(f"report (tables + plots + page): {report_s:.2f} s, page {page_mb:.2f} MB")
        lazy = written.page
        eager = lazy.with_name("review-eager.html")
        eager.write_text(lazy.read_text().replace('preload="none" data-src=', 'preload="metadata" src='))

        results: dict[str, list[dict]] = {"lazy (page default)": [], "eager preload": []}
        with sync_playwright() as pw:
            for _ in range(a.rounds):
                for name, path in (("lazy (page default)", lazy), ("eager preload", eager)):
                    # A fresh browser per measurement: memory is that page's alone.
                    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                    try:
                        results[name].append(measure(browser, path))
                    finally:
                        browser.close()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    lz, eg = med["lazy (page default)"], med["eager preload"]
    print(f"\n{'variant':<22}{'load s':>9}{'first screen s':>16}{'videos fetched':>16}{'chromium MB':>13}")
    for k, m in med.items():
        print(f"{k:<22}{m['load_s']:>9.2f}{m['first_screen_s']:>16.2f}{m['videos_fetched']:>16.0f}{m['rss_mb']:>13.0f}")
    print(f"\nmedians of {a.rounds} alternating rounds; ratios eager / lazy: "
          f"first screen {eg['first_screen_s'] / lz['first_screen_s']:.2f}x, "
          f"videos fetched {eg['videos_fetched'] / max(lz['videos_fetched'], 1):.1f}x, "
          f"chromium memory {eg['rss_mb'] / lz['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
