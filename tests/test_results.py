"""Tables and intervals against values computed independently."""

import math

import pytest
from scipy.stats import binomtest

from nora_bench.results import wilson_interval
from nora_bench.run.rundir import RunDir
from nora_bench import results


@pytest.mark.parametrize("k,n", [(0, 4), (4, 4), (3, 10), (47, 50), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_of_nothing_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_tables_count_errored_apart(tmp_path):
    from nora_bench.config import RunConfig

    rd = RunDir(tmp_path / "run")
    rd.open(RunConfig(suite={"name": "s"}, policy={"name": "p"}, tasks=[0, 1], trials=[0, 1, 2]), {})
    outcomes = {(0, 0): True, (0, 1): False, (0, 2): True, (1, 0): None, (1, 1): True, (1, 2): False}
    for (task, trial), success in outcomes.items():
        rd.append({"key": f"s/{task}/{trial}", "suite": "s", "task_id": task, "task": f"t{task}", "trial": trial,
                   "success": success, "termination": "error" if success is None else ("success" if success else "step_limit"),
                   "timings": {"wall_s": 1.0}})
    df = results.load(rd.path)
    tasks = results.task_table(df).set_index("task_id")
    assert tasks.loc[0, "successes"] == 2 and tasks.loc[0, "episodes"] == 3 and tasks.loc[0, "errored"] == 0
    assert tasks.loc[1, "successes"] == 1 and tasks.loc[1, "episodes"] == 3 and tasks.loc[1, "errored"] == 1
    assert tasks.loc[1, "success_rate"] == pytest.approx(0.5)  # the errored episode is not a zero
    assert tasks.loc[0, "task"] == "t0"
    suite = results.suite_table(df).iloc[0]
    assert suite["successes"] == 3 and suite["episodes"] == 6 and suite["errored"] == 1
    lo, hi = binomtest(3, 5).proportion_ci(method="wilson")
    assert suite["ci95_low"] == pytest.approx(lo) and suite["ci95_high"] == pytest.approx(hi)
    assert "time_wall_s" in df.columns


def test_torn_last_line_is_ignored_and_healed(tmp_path):
    from nora_bench.config import RunConfig

    rd = RunDir(tmp_path / "run")
    rd.open(RunConfig(suite={"name": "s"}, policy={"name": "p"}, tasks=[0], trials=[0, 1]), {})
    rd.append({"key": "a", "success": True})
    with open(rd.episodes_path, "a") as f:
        f.write('{"key": "b", "succ')  # a crash mid-write
    assert rd.done_keys() == {"a"}
    rd.append({"key": "b", "success": False})
    assert [r["key"] for r in rd.records()] == ["a", "b"]


def test_wilson_bounds_are_exact_at_zero_and_n_and_always_hold_the_rate():
    # The closed form lands a rounding hair past the rate (6.9e-18 for 0/50, 0.9999999999999999
    # for 10/10), which made the report's error bars negative.
    for n in range(1, 201):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
