"""`nora-bench report BASE PERTURBED...`: success per family and level, the drop from the base with McNemar
on paired episodes (the distractors ablation keeps the benchmark's init states) and Fisher where LIBERO-PRO
regenerated them, heatmap and drop plot, and the page (in Debian's Chromium) that shows first the episodes
a perturbation broke."""

from __future__ import annotations

import pandas as pd
import pytest
from playwright.sync_api import sync_playwright
from report_helpers import cli, launch_browser, make_run, outcomes
from scipy import stats

from nora_bench.report.robustness import robustness, write_robustness

# Two tasks x 5 trials each. Base: 8/10. Distractors (same scenes): pairs broken at (0,1), (1,0), (1,3);
# one fixed at (0,4). lan (regenerated init states): 4/10.
BASE = ("SSSSF", "SFSSS")
DIST = ("SFSSS", "FFSFS")
LAN = ("SFSFF", "FSFSF")


def _runs(root, videos=True):
    base = make_run(root / "base", outcomes(0, BASE[0], [50] * 4) + outcomes(1, BASE[1], [60] * 4),
                    trials=range(5), videos=videos).path
    dist = make_run(root / "dist", outcomes(0, DIST[0], [55] * 4) + outcomes(1, DIST[1], [66] * 2),
                    trials=range(5), videos=videos, suite="libero_spatial_distractors", distractors=2).path
    lan = make_run(root / "lan", [dict(e, instruction=f"paraphrase {e['task_id']}") for e in
                                  outcomes(0, LAN[0], [40, 41]) + outcomes(1, LAN[1], [70, 71])],
                   trials=range(5), videos=videos, suite="libero_spatial_lan").path
    return base, dist, lan


def test_tables_pair_the_same_scene_and_leave_regenerated_init_states_unpaired(tmp_path):
    base, dist, lan = _runs(tmp_path, videos=False)
    rob = robustness([base, dist, lan])
    t = rob.per_family.set_index("family")
    assert list(rob.per_family["family"]) == ["base", "distractors", "lan"]
    assert (t.loc["base", "successes"], t.loc["base", "episodes"]) == (8, 10)

    d = t.loc["distractors"]
    assert (d["level"], d["base_suite"], d["successes"], d["episodes"]) == ("2", "libero_spatial", 6, 10)
    assert d["test"] == "McNemar, 10 paired episodes" and (d["only_base"], d["only_perturbed"]) == (3, 1)
    assert d["p"] == pytest.approx(stats.binomtest(3, 4, 0.5).pvalue)
    assert d["drop"] == pytest.approx(0.2)
    lo, hi = d["ci95_low"], d["ci95_high"]
    assert 0.3 < lo < 0.6 < hi < 0.9  # Wilson 6/10: [31.3%, 83.2%]

    lan_row = t.loc["lan"]
    assert lan_row["test"] == "Fisher, unpaired" and lan_row["pairs"] == 0 and "regenerated" in lan_row["note"]
    assert lan_row["p"] == pytest.approx(stats.fisher_exact([[8, 2], [4, 6]]).pvalue)
    assert lan_row["drop"] == pytest.approx(0.4)

    broken = rob.broken
    dist_broken = broken[broken["family"] == "distractors"]
    assert sorted(zip(dist_broken["task_id"], dist_broken["trial"])) == [(0, 1), (1, 0), (1, 3)]
    assert set(dist_broken["matched_by"]) == {"same scene and init state"}
    lan_broken = broken[broken["family"] == "lan"]
    expected = [(t, i) for t in (0, 1) for i in range(5) if BASE[t][i] == "S" and LAN[t][i] != "S"]
    assert sorted(zip(lan_broken["task_id"], lan_broken["trial"])) == expected
    assert set(lan_broken["instruction_pert"]) <= {"paraphrase 0", "paraphrase 1"}


def test_report_needs_a_base_run(tmp_path):
    _, dist, lan = _runs(tmp_path, videos=False)
    r = cli("report", str(dist), str(lan))
    assert r.returncode == 2 and "none of the runs is a base run" in r.stderr


@pytest.fixture(scope="module")
def runs_with_videos(tmp_path_factory):
    """The three runs with videos, made once (the two tests below only read them)."""
    return _runs(tmp_path_factory.mktemp("robustness"))


def test_report_command_writes_tables_plots_and_page_with_broken_episodes_first(tmp_path, runs_with_videos):
    base, dist, lan = runs_with_videos
    out = tmp_path / "rob"
    r = cli("report", str(base), str(dist), str(lan), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "McNemar" in r.stdout and "Fisher" in r.stdout and "8 episode(s) succeeded on the base" in r.stdout
    table = pd.read_csv(out / "robustness_per_family.csv")
    assert list(table["family"]) == ["base", "distractors", "lan"]
    assert list(table["test"])[1:] == ["McNemar, 10 paired episodes", "Fisher, unpaired"]
    for png in ("robustness_heatmap.png", "robustness_drop.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((out / "robustness.html").resolve().as_uri())
            first_h2 = page.locator("h2").first.inner_text()
            assert first_h2.startswith("Succeeded on the base scene, failed perturbed (8)")
            cards = page.locator("#cards .card.broken")
            assert cards.count() == 8
            card = cards.first
            card.scroll_into_view_if_needed()
            page.wait_for_function("""Array.from(document.querySelectorAll('#cards .card.broken')[0]
                .querySelectorAll('video')).every(v => v.readyState >= 1 && v.duration > 0)""", timeout=20000)
            srcs = page.evaluate("""Array.from(document.querySelectorAll('#cards .card.broken')[0]
                .querySelectorAll('video')).map(v => v.currentSrc)""")
            assert len(srcs) == 2 and "/base/videos/" in srcs[0] and "/base/videos/" not in srcs[1]
            imgs = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
            assert {a for a, w in imgs if w > 0} == {"robustness_heatmap", "robustness_drop"}
        finally:
            browser.close()


def test_page_grids_link_videos_and_outline_broken_episodes(tmp_path, runs_with_videos):
    base, dist, lan = runs_with_videos
    rob = robustness([base, dist, lan])
    written = write_robustness(rob, tmp_path / "rob", plots=False)
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page()
            page.goto(written.page.resolve().as_uri())
            grids = page.evaluate("""Array.from(document.querySelectorAll('table.grid')).map(t => ({
                name: t.dataset.suite, cells: t.querySelectorAll('a.cell[data-key]').length,
                marked: Array.from(t.querySelectorAll('a.cell.marked')).map(a => a.dataset.key),
                hrefs: Array.from(t.querySelectorAll('a.cell[data-key]')).map(a => a.href)}))""")
            assert [g["name"] for g in grids] == ["base: libero_spatial", "dist: libero_spatial_distractors",
                                                  "lan: libero_spatial_lan"]
            assert all(g["cells"] == 10 for g in grids)
            assert grids[0]["marked"] == []
            assert sorted(grids[1]["marked"]) == sorted(rob.broken[rob.broken["family"] == "distractors"]["key_pert"])
            assert len(grids[2]["marked"]) == int((rob.broken["family"] == "lan").sum())
            failed = [h for h in grids[1]["hrefs"] if h.endswith(".mp4")]
            assert len(failed) == 10 and all("/dist/videos/" in h for h in failed)
        finally:
            browser.close()
