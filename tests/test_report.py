"""Report tables, statistics and comparisons, checked against values computed independently here."""

from __future__ import annotations

import math
import re
from itertools import product

import pandas as pd
import pytest
from report_helpers import cli, cli_in_process, make_run, outcomes
from scipy import optimize, stats

from nora_bench.report import compare_runs, run_tables, write_comparison, write_run_report

Z = stats.norm.ppf(0.975)


def wilson_by_root(k: int, n: int) -> tuple[float, float]:
    """The Wilson bounds as the roots of |p_hat - p| = z * sqrt(p (1 - p) / n) (not the closed form)."""
    p_hat = k / n
    f = lambda p: (p_hat - p) ** 2 - Z * Z * p * (1 - p) / n  # noqa: E731
    eps = 1e-12  # p_hat itself is a root of f when k is 0 or n: bracket the other root only
    lo = 0.0 if k == 0 else optimize.brentq(f, 0.0, min(p_hat, 1 - eps), xtol=1e-14)
    hi = 1.0 if k == n else optimize.brentq(f, max(p_hat, eps), 1.0, xtol=1e-14)
    return lo, hi


def fisher_by_enumeration(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p: the probability of all tables with the same margins no likelier than this one."""
    total, wins = n1 + n2, k1 + k2
    def prob(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, wins - a) / math.comb(total, wins)
    observed = prob(k1)
    return sum(prob(a) for a in range(max(0, wins - n2), min(n1, wins) + 1) if prob(a) <= observed * (1 + 1e-9))


def mcnemar_by_binomial(b: int, c: int) -> float:
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


# Task 0: 7 successes, 2 step limits, 1 error; task 1: 1 success, 7 step limits, a policy stop, a policy error.
STEPS0 = [100, 120, 90, 150, 110, 95, 105]


def base_episodes() -> list[dict]:
    eps = outcomes(0, "SSSFSSFSSE", STEPS0) + outcomes(1, "FFSFFFDPFF", [200])
    eps[16]["decode_failures"], eps[16]["failure_reasons"] = 3, ["no action tokens", "no action tokens", "wrong length"]
    eps[3]["decode_failures"] = 1
    return eps


@pytest.fixture
def run(tmp_path):
    make_run(tmp_path / "runA", base_episodes())
    return tmp_path / "runA"


def test_success_tables_match_independent_counts_and_wilson_roots(run):
    t = run_tables(run)
    task = t.per_task.set_index("task_id")
    assert task.loc[0, ["episodes", "successes", "errored"]].tolist() == [10, 7, 1]
    assert task.loc[1, ["episodes", "successes", "errored"]].tolist() == [10, 1, 0]
    assert task.loc[0, "task"] == "task_0_name"
    for tid, (k, n) in {0: (7, 9), 1: (1, 10)}.items():
        assert task.loc[tid, "success_rate"] == pytest.approx(k / n)
        lo, hi = wilson_by_root(k, n)
        assert task.loc[tid, "ci95_low"] == pytest.approx(lo, abs=1e-9)
        assert task.loc[tid, "ci95_high"] == pytest.approx(hi, abs=1e-9)
    assert task.loc[0, "mean_steps_success"] == pytest.approx(sum(STEPS0) / 7)
    assert task.loc[1, "mean_steps_success"] == 200
    assert task["decode_failures"].tolist() == [1, 3]

    suite = t.per_suite.iloc[0]
    assert (suite["successes"], suite["episodes"] - suite["errored"]) == (8, 19)
    assert suite["ci95_low"] == pytest.approx(wilson_by_root(8, 19)[0], abs=1e-9)
    assert suite["mean_steps_success"] == pytest.approx((sum(STEPS0) + 200) / 8)
    overall = t.overall.iloc[0]
    assert overall["scope"] == "all" and overall["success_rate"] == pytest.approx(8 / 19)
    assert t.varying == []


def test_terminations_throughput_and_notes(run):
    t = run_tables(run)
    term = t.terminations.iloc[0]
    assert term[["episodes", "success", "step_limit", "policy_stop", "policy_error", "error", "env_failure"]].tolist() \
        == [20, 8, 9, 1, 1, 1, 0]
    assert term["episodes_with_decode_failures"] == 2 and term["decode_failures"] == 4
    th = t.throughput.set_index("metric")["value"]
    steps = sum(STEPS0) + 200 + 220 * 11  # 2 + 9 failures of 220 steps, the error 0
    assert th["env_steps"] == steps
    # make_run finishes episode i at START + 10 (i + 1) s: 20 episodes in 200 s.
    assert th["span_s"] == 200 and th["episodes_per_min"] == pytest.approx(6.0)
    assert th["env_steps_per_s"] == pytest.approx(steps / 200)
    assert th["env_ms_per_step"] == pytest.approx(1000 * 2.0 * 20 / steps)
    assert th["parallelism"] == pytest.approx(3.0 * 20 / 200)
    assert any("1 episode(s) errored" in n for n in t.notes)
    assert not any("incomplete" in n for n in t.notes)


def test_incomplete_run_and_duplicate_records_are_reported(tmp_path):
    eps = outcomes(0, "SF", [50])
    make_run(tmp_path / "r", eps + [dict(eps[1], termination="success", env_steps=70)], tasks=(0,), trials=range(3))
    t = run_tables(tmp_path / "r")
    assert t.per_task.loc[0, "successes"] == 2  # the later record of trial 1 wins
    assert any("recorded more than once" in n for n in t.notes)
    assert any("incomplete run: 1 of 3" in n for n in t.notes)


def test_chunk_rule_varying_inside_a_run_splits_tables_and_plots(tmp_path):
    eps = [dict(e, chunk_exec="all") for e in outcomes(0, "SSSSF", [80] * 4)]
    eps += [dict(e, trial=e["trial"] + 5, chunk_exec="first") for e in outcomes(0, "SFFFF", [150])]
    make_run(tmp_path / "r", eps, tasks=(0,))
    t = run_tables(tmp_path / "r")
    assert t.varying == ["chunk_exec"]
    by_rule = t.per_task.set_index("chunk_exec")
    assert by_rule.loc["all", "successes"] == 4 and by_rule.loc["first", "successes"] == 1
    rows = t.overall.set_index("chunk_exec", drop=False)
    assert rows.loc["first", "success_rate"] == pytest.approx(0.2)
    assert rows["scope"].tolist() == ["all"] * 3  # the pooled row and one per rule
    written = write_run_report(t, html=False)
    png = written.plots["success_vs_chunk_exec"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert set(written.plots) == {"success_per_task", "success_vs_chunk_exec"}


def _pattern_run(path, p0: str, p1: str, **kw):
    eps = outcomes(0, p0, [60] * p0.count("S")) + outcomes(1, p1, [90] * p1.count("S"))
    make_run(path, eps, **kw)


def test_compare_statistics_match_independent_computation(tmp_path):
    a0, a1 = "SSSSSSSSFF", "SFFSFFSFFF"  # 8/10, 3/10
    b0, b1 = "SSFFFFFFSS", "SSSSSSSSSF"  # 4/10, 9/10
    _pattern_run(tmp_path / "A", a0, a1)
    _pattern_run(tmp_path / "B", b0, b1, max_steps=300, versions={"mujoco": "3.3.3"})
    c = compare_runs([tmp_path / "A", tmp_path / "B"])
    assert c.labels == ["A", "B"]
    wide = c.per_task.set_index("task_id")
    p = [fisher_by_enumeration(8, 10, 4, 10), fisher_by_enumeration(3, 10, 9, 10)]
    assert wide["p B vs A"].tolist() == pytest.approx(p, rel=1e-9)
    assert wide["diff B - A"].tolist() == pytest.approx([-0.4, 0.6])
    lo, hi = sorted(p)
    holm_expected = [min(1, 2 * lo), max(min(1, 2 * lo), min(1, hi))]
    assert sorted(wide["p_holm B vs A"].tolist()) == pytest.approx(holm_expected)

    ov = c.overall.set_index("run")
    assert ov.loc["B", "p_fisher"] == pytest.approx(fisher_by_enumeration(11, 20, 13, 20), rel=1e-9)
    pairs = list(zip(a0 + a1, b0 + b1))
    only_a, only_b = pairs.count(("S", "F")), pairs.count(("F", "S"))
    assert (ov.loc["B", "only_base"], ov.loc["B", "only_this"], ov.loc["B", "paired_episodes"]) == (only_a, only_b, 20)
    assert ov.loc["B", "p_mcnemar"] == pytest.approx(mcnemar_by_binomial(only_a, only_b), rel=1e-9)
    assert ov.loc["A", "ci95_high"] == pytest.approx(wilson_by_root(11, 20)[1], abs=1e-9)

    text = " | ".join(c.warnings)
    assert "max_steps: A=220, B=300" in text and "simulator version mujoco: A=2.3.7, B=3.3.3" in text
    assert "chunk_exec" not in text


def test_compare_warns_on_chunk_rule_and_different_episodes_and_plots_it(tmp_path):
    _pattern_run(tmp_path / "A", "SSF", "SFF", trials=range(3))
    _pattern_run(tmp_path / "B", "SF", "FF", trials=range(2), chunk_exec="first")
    c = compare_runs([tmp_path / "A", tmp_path / "B"])
    text = " | ".join(c.warnings)
    assert "chunk_exec: A=all, B=first" in text and "different episodes" in text
    assert c.overall.set_index("run").loc["B", "paired_episodes"] == 4
    written = write_comparison(c, tmp_path / "cmp")
    assert set(written.plots) == {"compare_per_task", "compare_vs_chunk_exec"}
    back = pd.read_csv(tmp_path / "cmp" / "compare_per_task.csv")
    assert back["A successes"].tolist() == [2, 1] and back["B successes"].tolist() == [1, 0]


def test_report_and_compare_commands(tmp_path):
    _pattern_run(tmp_path / "A", "SSSF", "SFFF", trials=range(4))
    _pattern_run(tmp_path / "B", "SSFF", "SSSF", trials=range(4), max_steps=100)
    r = cli("report", str(tmp_path / "A"))
    assert r.returncode == 0, r.stderr
    assert "Success per task" in r.stdout and "review page: file://" in r.stdout
    folder = tmp_path / "A" / "report"
    table = pd.read_csv(folder / "success_per_task.csv")
    assert table["successes"].tolist() == [3, 1] and table["success_rate"].tolist() == pytest.approx([0.75, 0.25])
    md = (folder / "report.md").read_text()
    assert "## Success per task" in md and re.search(r"\|\s*75\.0%\s*\|", md)
    assert "- protocol: `chunk rule all, step limit 220 env_steps, settle steps 10, distractors 0, seed 7`" in md
    assert "mujoco 2.3.7" in md
    assert (tmp_path / "A" / "review.html").is_file() and (folder / "success_per_task.png").is_file()

    r = cli("compare", str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stdout and "max_steps" in r.stdout
    assert (tmp_path / "cmp" / "compare.md").read_text().count("WARNING") == 1
    assert pd.read_csv(tmp_path / "cmp" / "compare_overall.csv")["successes"].tolist() == [4, 5]


@pytest.mark.parametrize("args, message", [
    (("report", "/nonexistent/run"), "is not a nora-bench run folder"),
    (("compare", "/nonexistent/a"), "at least two run folders"),
])
def test_bad_input_is_one_clear_line(args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_empty_run_folder_is_refused_with_the_fix(tmp_path):
    make_run(tmp_path / "empty", [])
    r = cli("report", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no finished episode yet" in r.stderr


def test_page_escapes_text_from_tasks_and_records(tmp_path):
    evil = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'
    eps = [dict(e, instruction=evil, task=evil, error=evil) for e in outcomes(0, "SP", [40])]
    make_run(tmp_path / "r", eps, tasks=(0,), trials=range(2))
    page = write_run_report(run_tables(tmp_path / "r"), plots=False).page.read_text()
    assert evil not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert page.count("<script") == 2  # the inert JSON summary and the page's own script


def test_wilson_reference_values():
    # Published example (Newcombe 1998, table I): 81/263 -> 0.2553 to 0.3662.
    from nora_bench.results import wilson_interval

    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    for k, n in product((0, 1, 5), (5, 12)):
        assert wilson_interval(k, n) == pytest.approx(wilson_by_root(k, n), abs=1e-9)


def test_compare_matches_a_distractor_variant_to_its_base_suite(tmp_path):
    variant = tmp_path / "libero_spatial_distractors.yaml"
    variant.write_text("name: libero_spatial_distractors\nenv: libero\nbenchmark: libero_spatial\nnum_tasks: 10\n"
                       "max_steps: 220\ndistractors: 2\n")
    _pattern_run(tmp_path / "base", "SSSF", "SSFF", trials=range(4))
    _pattern_run(tmp_path / "dist", "SFFF", "SSFF", trials=range(4), suite=str(variant), distractors=2)
    c = compare_runs([tmp_path / "base", tmp_path / "dist"])
    wide = c.per_task.set_index("task_id")
    assert wide["suite"].tolist() == ["libero_spatial"] * 2
    assert wide["dist successes"].tolist() == [1, 2] and wide["base successes"].tolist() == [3, 2]
    ov = c.overall.set_index("run")
    assert ov.loc["dist", "paired_episodes"] == 8 and (ov.loc["dist", "only_base"], ov.loc["dist", "only_this"]) == (2, 0)
    text = " | ".join(c.warnings)
    assert "distractors: base=0, dist=2" in text and "different suites" in text and "different episodes" not in text
    written = write_comparison(c, tmp_path / "cmp")
    assert "compare_vs_distractors" in written.plots


def test_task_categories_reported_by_the_env_get_their_own_table(tmp_path):
    eps = outcomes(0, "SSF", [30, 40], env_info={"category": "ood_object_grasping"})
    eps += outcomes(1, "SFF", [50], env_info={"category": "spatial"})
    for e, partial in zip(eps[3:], (1.0, 0.5, 0.0)):  # multi-object credit, as the WidowX env records it
        e["env_info"] = {"category": "spatial", "partial_success": partial}
    eps += outcomes(2, "S", [60], env_info={"category": "ood_object_grasping"})
    make_run(tmp_path / "r", eps, tasks=(0, 1, 2), trials=range(3))
    t = run_tables(tmp_path / "r")
    cat = t.per_category.set_index("category")
    assert cat.loc["ood_object_grasping", ["successes", "episodes"]].tolist() == [3, 4]
    assert cat.loc["spatial", ["successes", "episodes"]].tolist() == [1, 3]
    assert "success_per_category" in t.frames()
    assert cat.loc["spatial", "mean_partial_success"] == pytest.approx(0.5)
    assert math.isnan(cat.loc["ood_object_grasping", "mean_partial_success"])
    assert t.overall.loc[0, "mean_partial_success"] == pytest.approx(0.5)  # mean over the episodes that have it


def test_compare_three_runs_against_the_first_and_errored_episodes_left_out(tmp_path):
    _pattern_run(tmp_path / "A", "SSFE", "SFFF", trials=range(4))
    _pattern_run(tmp_path / "B", "SSSS", "SSFF", trials=range(4))
    _pattern_run(tmp_path / "C", "FFFF", "FFFE", trials=range(4), chunk_exec="first:2")
    c = compare_runs([tmp_path / "A", tmp_path / "B", tmp_path / "C"])
    wide = c.per_task.set_index("task_id")
    assert wide["A episodes"].tolist() == [3, 4] and wide["C episodes"].tolist() == [4, 3]
    assert wide["p B vs A"].tolist() == pytest.approx([fisher_by_enumeration(2, 3, 4, 4), fisher_by_enumeration(1, 4, 2, 4)])
    assert wide["p C vs A"].tolist() == pytest.approx([fisher_by_enumeration(2, 3, 0, 4), fisher_by_enumeration(1, 4, 0, 3)])
    assert wide["diff C - A"].tolist() == pytest.approx([-2 / 3, -0.25])
    ov = c.overall.set_index("run")
    assert ov["successes"].tolist() == [3, 6, 0] and ov["episodes"].tolist() == [7, 8, 7]
    # Pairs need an outcome on both sides: A's and C's errored episodes drop out.
    assert ov.loc["B", "paired_episodes"] == 7 and ov.loc["C", "paired_episodes"] == 6
    assert "chunk_exec: A=all, B=all, C=first:2" in " | ".join(c.warnings)


@pytest.mark.parametrize("pattern", ["F" * 50, "S" * 10, "FFF", "SSS"])
def test_report_and_compare_of_runs_with_no_or_only_successes(tmp_path, pattern):
    """0/n and n/n runs (the default 50 trials of a task that always fails): the Wilson bounds sit
    exactly on the rate, the plots' error bars are not negative, and report/compare write everything.
    The commands run in this process (8 calls); their subprocess runs are the tests above."""
    n, wins = len(pattern), pattern.count("S")
    make_run(tmp_path / "A", outcomes(0, pattern, [80] * wins), tasks=(0,), trials=range(n))
    other = "".join("S" if c == "F" else "F" for c in pattern)
    make_run(tmp_path / "B", outcomes(0, other, [80] * other.count("S")), tasks=(0,), trials=range(n))
    r = cli_in_process("report", str(tmp_path / "A"))
    assert r.returncode == 0, r.stderr
    row = pd.read_csv(tmp_path / "A" / "report" / "success_per_task.csv").iloc[0]
    assert (row["successes"], row["ci95_low"] if wins == 0 else row["ci95_high"]) == (wins, 0.0 if wins == 0 else 1.0)
    assert (tmp_path / "A" / "report" / "success_per_task.png").stat().st_size > 5000
    assert (tmp_path / "A" / "review.html").is_file()
    r = cli_in_process("compare", str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "cmp" / "compare_overall.csv")["successes"].tolist() == [wins, n - wins]
    assert any(p.suffix == ".png" for p in (tmp_path / "cmp").iterdir())
