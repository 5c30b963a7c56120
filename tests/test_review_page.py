"""The HTML review page in a real headless Chromium (Debian's, driven by Playwright): videos load,
filters change what is shown, text is escaped; and the commands on folders made by `nora-bench run`."""

from __future__ import annotations

import pandas as pd
import pytest
from playwright.sync_api import sync_playwright
from report_helpers import ARTIFACTS, cli, launch_browser, make_run, outcomes

from nora_bench.report import run_tables, write_run_report

EVIL = '<script>window.pwned=1</script><b>bold?</b> & "quotes"'
VIDEO_FRAMES = 12  # make_run's videos: 12 frames at 20 fps


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = launch_browser(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    p = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        yield p
    finally:
        p.close()


def visible_cards(page) -> list[dict]:
    return page.evaluate("""Array.from(document.querySelectorAll('#cards .card')).filter(c => !c.hidden)
        .map(c => ({key: c.dataset.key, outcome: c.dataset.outcome, task: c.dataset.task, suite: c.dataset.suite,
                    termination: c.dataset.termination, shown: c.offsetParent !== null}))""")


def wait_videos_loaded(page, expected: int) -> list[dict]:
    """Scroll every visible video into view (they load lazily) and wait for its metadata."""
    n = page.locator("#cards .card:not([hidden]) video").count()
    assert n == expected
    for i in range(n):
        page.locator("#cards .card:not([hidden]) video").nth(i).scroll_into_view_if_needed()
    page.wait_for_function("""Array.from(document.querySelectorAll('#cards .card:not([hidden]) video'))
        .every(v => v.readyState >= 1 && v.duration > 0)""", timeout=20000)
    return page.evaluate("""Array.from(document.querySelectorAll('#cards .card:not([hidden]) video'))
        .map(v => ({src: v.currentSrc, duration: v.duration, width: v.videoWidth, state: v.readyState,
                    error: v.error && v.error.code}))""")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A run with successes, failures, an error without video, a second suite and hostile text, and
    its review page: made once (9 videos); each test opens the page afresh."""
    eps = outcomes(0, "SSFS", [40, 50, 60]) + outcomes(1, "FFSE", [70])
    eps[0].update(task=EVIL)
    eps[1].update(instruction=EVIL, task=EVIL)
    eps[4].update(termination="policy_stop", decode_failures=2, failure_reasons=["no action tokens"], error="decode failed")
    eps += [dict(e, suite="libero_object") for e in outcomes(2, "SF", [30])]
    run = tmp_path_factory.mktemp("synthetic") / "run"
    make_run(run, eps, trials=range(4), videos=True)
    written = write_run_report(run_tables(run))
    return written.page, eps


@pytest.fixture
def synthetic_page(synthetic_run, page):
    path, eps = synthetic_run
    page.goto(path.as_uri())
    return page, [dict(e) for e in eps]


def test_videos_load_and_cards_are_sorted_failures_first(synthetic_page):
    page, eps = synthetic_page
    cards = visible_cards(page)
    assert len(cards) == len(eps) == 10
    assert page.locator("#count").inner_text() == "10 of 10 episodes shown"
    outcomes_in_order = [c["outcome"] for c in cards]
    assert outcomes_in_order[0] == "error"
    first_success = outcomes_in_order.index("success")
    assert set(outcomes_in_order[first_success:]) == {"success"} and "success" not in outcomes_in_order[:first_success]
    videos = wait_videos_loaded(page, expected=9)  # the errored episode has no video
    for v in videos:
        assert v["error"] is None and v["width"] == 64
        assert v["duration"] == pytest.approx(VIDEO_FRAMES / 20, abs=0.06)
    assert page.locator(".card.error .novideo").inner_text() == "no video recorded"
    # Plots load from disk too.
    widths = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    assert widths and all(w > 100 for w in widths)


def test_filters_change_what_is_shown(synthetic_page):
    page, eps = synthetic_page
    failures = sum(e["termination"] != "success" for e in eps)
    page.check("#f-fail")
    cards = visible_cards(page)
    assert len(cards) == failures == 5 and all(c["outcome"] != "success" and c["shown"] for c in cards)
    assert page.locator("#count").inner_text() == f"{failures} of 10 episodes shown"
    wait_videos_loaded(page, expected=4)

    page.select_option("#f-task", "libero_spatial/1")
    cards = visible_cards(page)
    assert [c["key"] for c in cards] == ["libero_spatial/task001/trial03", "libero_spatial/task001/trial00",
                                         "libero_spatial/task001/trial01"]
    page.uncheck("#f-fail")
    assert len(visible_cards(page)) == 4

    page.select_option("#f-task", "")
    page.select_option("#f-suite", "libero_object")
    assert {c["key"] for c in visible_cards(page)} == {"libero_object/task002/trial00", "libero_object/task002/trial01"}
    page.select_option("#f-suite", "")
    page.select_option("#f-term", "policy_stop")
    assert [c["key"] for c in visible_cards(page)] == ["libero_spatial/task001/trial00"]
    page.select_option("#f-term", "")
    assert len(visible_cards(page)) == 10


def test_text_from_tasks_and_records_is_shown_escaped(synthetic_page):
    page, _ = synthetic_page
    assert page.evaluate("window.pwned") is None
    card = page.locator('.card[data-key="libero_spatial/task000/trial01"]')
    assert card.locator(".instr").inner_text() == EVIL
    assert card.locator(".instr b, .instr script").count() == 0
    option_texts = page.locator("#f-task option").all_inner_texts()
    assert f"libero_spatial #0: {EVIL}" in option_texts
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-page-synthetic.png"), full_page=True)


@pytest.fixture(scope="module")
def real_runs(zero_run, tmp_path_factory):
    """Two short real runs (zero policy, LIBERO): the session's CLI run through Ray (conftest.py
    `zero_run`: 2 tasks x 2 trials, 12 steps) and a second with another step limit, in process."""
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    run_a, _ = zero_run
    run_b = tmp_path_factory.mktemp("real") / "zeroB"
    config = RunConfig.resolve(suite="libero_spatial", policy="zero", tasks="0", trials=1, max_steps=10)
    assert Scheduler(config, RunDir(run_b), ExecOptions(in_process=True, progress=False)).run() == 1
    return run_a, run_b


def test_report_page_of_a_real_run_plays_its_videos(real_runs, page):
    run_a, _ = real_runs
    r = cli("report", str(run_a))
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(run_a / "report" / "success_per_task.csv")
    # The zero policy never succeeds; the simulator's own check decided that.
    assert table[["episodes", "successes", "errored"]].values.tolist() == [[2, 0, 0], [2, 0, 0]]
    terms = pd.read_csv(run_a / "report" / "terminations.csv")
    assert terms.loc[0, "step_limit"] == 4
    page.goto((run_a / "review.html").as_uri())
    assert page.locator("#count").inner_text() == "4 of 4 episodes shown"
    videos = wait_videos_loaded(page, expected=4)
    for v in videos:
        # 1 frame after settling + 12 steps at 20 fps, 256x256 agentview.
        assert v["duration"] == pytest.approx(13 / 20, abs=0.06) and v["width"] == 256
    # Frames decode (not only metadata): seek into each video and wait for current data.
    page.evaluate("""Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(done => {
        v.addEventListener('seeked', done, {once: true}); v.currentTime = 0.3; })))""")
    page.wait_for_function("Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 2)", timeout=20000)
    instr = page.locator(".card .instr").first.inner_text()
    assert instr.startswith("pick up the black bowl")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-page.png"), full_page=True)


def test_compare_on_real_runs_warns_about_the_protocol(real_runs, tmp_path):
    run_a, run_b = real_runs
    r = cli("compare", str(run_a), str(run_b), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    assert "max_steps: zeroA=12, zeroB=10" in r.stdout.replace("\n", " ")
    overall = pd.read_csv(tmp_path / "cmp" / "compare_overall.csv").set_index("run")
    # zeroA also ran task 1: only task 0, which both ran, is pooled overall, and compare says so.
    assert "runs cover different tasks: only the 1 task(s) all runs have are pooled overall" in r.stdout.replace("\n", " ")
    assert overall.loc["zeroA", "episodes"] == 2 and overall.loc["zeroB", "episodes"] == 1
    assert overall.loc["zeroB", "paired_episodes"] == 1 and overall.loc["zeroB", "p_mcnemar"] == 1.0
    assert (tmp_path / "cmp" / "compare_per_task.png").stat().st_size > 5000


def test_success_grid_has_one_cell_per_episode_and_a_click_opens_its_video(synthetic_page):
    page, eps = synthetic_page
    cells = page.evaluate("""Array.from(document.querySelectorAll('table.grid a.cell[data-key]')).map(a => ({
        key: a.dataset.key, outcome: a.dataset.outcome, bg: getComputedStyle(a).backgroundColor,
        suite: a.closest('table').dataset.suite}))""")
    cards = {c["key"]: c for c in visible_cards(page)}
    assert len(cells) == len(eps) == len(cards)
    colours = {"success": "rgb(46, 139, 87)", "failure": "rgb(192, 57, 43)", "error": "rgb(125, 60, 152)"}
    for c in cells:
        assert c["outcome"] == cards[c["key"]]["outcome"] and c["bg"] == colours[c["outcome"]]
        assert c["key"].startswith(c["suite"] + "/")
    # libero_spatial: tasks 0 and 1 x init states 0-3; libero_object: task 2 x init states 0-1
    assert page.locator("table.grid[data-suite='libero_spatial'] tbody tr").count() == 2
    assert page.locator("table.grid[data-suite='libero_spatial'] thead th").count() == 1 + 4
    assert page.locator("table.grid[data-suite='libero_object'] a.cell").count() == 2
    # A success hidden by the "failures only" filter: the click shows its card and plays its video.
    page.check("#f-fail")
    key = next(c["key"] for c in cells if c["outcome"] == "success")
    card = page.locator(f"#cards .card[data-key='{key}']")
    assert card.is_hidden()
    page.locator(f"table.grid a.cell[data-key='{key}']").click()
    assert card.is_visible() and "target" in card.get_attribute("class")
    page.wait_for_function(f"""(() => {{ const v = document.querySelector("#cards .card[data-key='{key}'] video");
        return v && v.currentSrc.endsWith('.mp4') && v.readyState >= 1; }})()""", timeout=20000)
    box = card.bounding_box()
    assert box is not None and 0 <= box["y"] < 900, "the card is scrolled into view"
