"""`nora-bench compare` of paired runs: paired statistics per task, suite and all (with the test
used), warnings when runs are not paired, and the comparison page in a real headless Chromium (two
videos of the same init state side by side, discordant pairs first)."""

from __future__ import annotations

import json
import shutil

import pytest
from playwright.sync_api import sync_playwright
from report_helpers import cli, launch_browser, make_run, outcomes

from nora_bench.report import compare_runs
from nora_bench.report.compare import MCNEMAR, SIGN_TEST
from nora_bench.report.writer import write_comparison
from nora_bench.run.rundir import RunDir

EVIL = '<script>window.pwned=1</script>&"'


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Made once for the module (40 videos); the tests only read them (one changes a copy)."""
    # Task 0: B wins 4 pairs A lost; task 1: A wins 1 pair B lost. Same keys and seeds (paired).
    root = tmp_path_factory.mktemp("paired")
    a = outcomes(0, "SSFFSFSSFF", [40] * 10) + outcomes(1, "SSSSSSSSSS", [40] * 10)
    b = outcomes(0, "SSSSSSSSSF", [40] * 10) + outcomes(1, "SSSSSSSSSF", [40] * 10)
    a[0]["task"] = EVIL
    make_run(root / "a", a, trials=range(10), videos=True)
    make_run(root / "b", b, trials=range(10), videos=True)
    return root / "a", root / "b"


def test_paired_statistics_at_every_level(two_runs):
    c = compare_runs(list(two_runs))
    p = c.paired.set_index(["level", "task_id"], drop=False)
    t0 = p[(p["level"] == "task") & (p["task_id"] == 0)].iloc[0]
    assert (t0["pairs"], t0["only_this"], t0["only_baseline"], t0["both"]) == (10, 4, 0, 5)
    assert t0["p_mcnemar"] == pytest.approx(0.125)  # exact: 2 * 0.5**4
    assert 0 < t0["p_anytime"] <= 1 and t0["decision"] == "undecided"
    t1 = p[(p["level"] == "task") & (p["task_id"] == 1)].iloc[0]
    assert (t1["only_this"], t1["only_baseline"]) == (0, 1)
    suite = c.paired[c.paired["level"] == "suite"].iloc[0]
    every = c.paired[c.paired["level"] == "all"].iloc[0]
    assert (suite["pairs"], suite["only_this"], suite["only_baseline"]) == (20, 4, 1) == \
        (every["pairs"], every["only_this"], every["only_baseline"])
    assert suite["diff"] == pytest.approx(3 / 20)
    assert set(c.paired["test"]) == {f"{MCNEMAR}; {SIGN_TEST}"}  # neither run stopped early
    assert not [w for w in c.warnings if w.startswith("not paired")]


def test_a_run_stopped_early_names_the_anytime_test_and_unpaired_runs_are_said(tmp_path, two_runs):
    a, b = two_runs
    b = shutil.copytree(b, tmp_path / "b")  # the shared run stays as made
    RunDir(b).write_json(RunDir.STOPPING, {"status": "stopped", "rule": {"text": "decided"}})
    c = compare_runs([a, b])
    assert set(c.paired["test"]) == {SIGN_TEST}
    # Same tasks and init states, other scene seeds: not paired.
    other = [dict(e, seed=5000 + i) for i, e in enumerate(outcomes(0, "SSSSSSSSSF", [40] * 10))]
    make_run(tmp_path / "c", other + outcomes(1, "SSSSSSSSSF", [40] * 10), trials=range(10))
    c = compare_runs([a, tmp_path / "c"])
    assert any(w.startswith("not paired") and "scene seeds" in w for w in c.warnings)
    assert set(c.paired["decision"]) == {"not paired"}
    make_run(tmp_path / "d", outcomes(0, "SSSSSSSSSF", [40] * 10), trials=range(10), scene_seed=7)
    c = compare_runs([a, tmp_path / "d"])
    assert any("differ in scene_seed" in w for w in c.warnings)


def test_comparison_page_in_chromium(tmp_path, two_runs):
    c = compare_runs(list(two_runs))
    written = write_comparison(c, tmp_path / "cmp", plots=False)
    assert written.page and written.page.name == "compare.html"
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(written.page.as_uri())
            summary = json.loads(page.locator("#summary").inner_text())
            assert summary == {"pairs": 20, "discordant": 5, "both succeeded": 14, "both failed": 1}
            kinds = page.evaluate("Array.from(document.querySelectorAll('#pairs .pair')).map(p => p.dataset.kind)")
            assert kinds[:5] == ["discordant"] * 5 and "discordant" not in kinds[5:]
            assert kinds[5] == "both failed"
            assert page.locator("#count").inner_text() == "20 of 20 pairs shown"
            page.check("#f-disc")
            assert page.locator("#count").inner_text() == "5 of 20 pairs shown"
            first = page.locator("#pairs .pair").first
            # Two cards of the same episode, the baseline's left: different outcomes, same key.
            cards = first.locator(".card")
            assert cards.count() == 2
            keys = [cards.nth(i).get_attribute("data-key") for i in range(2)]
            assert keys[0] == keys[1] == first.get_attribute("data-key")
            assert {cards.nth(i).get_attribute("data-outcome") for i in range(2)} == {"success", "failure"}
            first.scroll_into_view_if_needed()
            page.wait_for_function("""Array.from(document.querySelectorAll('#pairs .pair:not([hidden])')).slice(0, 1)
                .every(p => Array.from(p.querySelectorAll('video')).every(v => v.readyState >= 1 && v.duration > 0))""",
                                   timeout=20000)
            srcs = first.evaluate("p => Array.from(p.querySelectorAll('video')).map(v => v.currentSrc)")
            assert len(srcs) == 2 and "/a/videos/" in srcs[0] and "/b/videos/" in srcs[1]
            page.uncheck("#f-disc")
            assert EVIL in page.locator("#pairs").inner_text()  # shown as text, never run
            assert page.evaluate("window.pwned") is None
        finally:
            browser.close()


def test_compare_command_prints_the_paired_table(tmp_path, two_runs):
    a, b = two_runs
    proc = cli("compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--no-plots")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Paired against the first run" in proc.stdout and "comparison page:" in proc.stdout
    assert (tmp_path / "cmp" / "compare.html").is_file() and (tmp_path / "cmp" / "compare_paired.csv").is_file()
