"""Tables and intervals against values computed independently."""

import math
import re

import pytest
from scipy.stats import binomtest

from nora_bench import results
from nora_bench.results import wilson_interval
from nora_bench.run.rundir import RecordWarning, RunDir


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
    rd.open(RunConfig(suite={"name": "s"}, policy={"name": "p", "kind": "zero"}, tasks=[0, 1], trials=[0, 1, 2]), {})
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


def record(key: str, trial: int, success: bool | None) -> dict:
    return {"key": key, "suite": "s", "task_id": 0, "task": "t0", "trial": trial, "success": success,
            "termination": "error" if success is None else ("success" if success else "step_limit"),
            "timings": {"wall_s": 1.0}}


def test_torn_last_line_is_ignored_and_healed(tmp_path):
    from nora_bench.config import RunConfig

    rd = RunDir(tmp_path / "run")
    rd.open(RunConfig(suite={"name": "s"}, policy={"name": "p", "kind": "zero"}, tasks=[0], trials=[0, 1]), {})
    rd.append(record("a", 0, True))
    with open(rd.episodes_path, "a") as f:
        f.write('{"key": "b", "succ')  # a crash mid-write
    with pytest.warns(RecordWarning, match="line 2 is torn"):
        assert rd.done_keys() == {"a"}
    rd.append(record("b", 1, False))
    with pytest.warns(RecordWarning, match="line 2 is not JSON"):  # now in the middle: said, skipped
        assert [r["key"] for r in rd.records()] == ["a", "b"]


def test_wilson_bounds_are_exact_at_zero_and_n_and_always_hold_the_rate():
    # The closed form lands a rounding hair past the rate (6.9e-18 for 0/50, 0.9999999999999999
    # for 10/10), which made the report's error bars negative.
    for n in range(1, 201):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_garbled_lines_are_skipped_with_a_warning_and_the_file_is_untouched(tmp_path):
    """A torn or non-JSON line in the middle, a JSON list, a record lacking fields: each is named in a
    warning and left out (no phantom `nan` suite row); the file is never rewritten."""
    from report_helpers import make_run, outcomes

    rd = make_run(tmp_path / "r", outcomes(0, "SF", [40]), tasks=(0,), trials=range(2))
    good = rd.episodes_path.read_text().splitlines()
    lines = [good[0], '{"key": "libero_spatial/task000/trial01", "suc', "[1, 2, 3]", '{"key": "x", "success": true}', good[1]]
    rd.episodes_path.write_text("\n".join(lines) + "\n")
    before = rd.episodes_path.read_bytes()
    with pytest.warns(RecordWarning) as caught:
        df = results.load(rd.path)
    said = [str(w.message) for w in caught]
    assert any("line 2 is not JSON: skipped" in m for m in said), said
    assert any("line 3 is a JSON list, not a record: skipped" in m for m in said), said
    assert any("line 4 lacks suite, task_id, trial, termination: skipped" in m for m in said), said
    assert sorted(df["key"]) == ["libero_spatial/task000/trial00", "libero_spatial/task000/trial01"]
    assert results.suite_table(df)["suite"].tolist() == ["libero_spatial"]
    assert rd.episodes_path.read_bytes() == before


def test_records_carry_the_config_fingerprint_and_an_edited_config_is_refused(tmp_path):
    from report_helpers import cli, make_run, outcomes

    rd = make_run(tmp_path / "r", outcomes(0, "SF", [40]), tasks=(0,), trials=range(2))
    assert {r["config_hash"] for r in rd.records()} == {rd.fingerprint}
    before = rd.episodes_path.read_bytes()
    # Someone edits config.yaml to match new flags: the records were made under the old settings.
    config = rd.path / "config.yaml"
    config.write_text(re.sub(r"(?m)^max_steps: 220$", "max_steps: 300", config.read_text()))
    rd = RunDir(rd.path)
    with pytest.warns(RecordWarning, match="2 record.* made under other settings"):
        assert rd.records() == []
    args = ["run", "libero_spatial", "--policy", "zero", "--tasks", "0", "--trials", "2", "--max-steps", "300"]
    proc = cli(*args, "--resume", str(rd.path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot resume" in proc.stderr and "made under other settings" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert rd.episodes_path.read_bytes() == before
    proc = cli("table", str(rd.path))
    assert "warning:" in proc.stderr and "made under other settings" in proc.stderr


def test_table_of_a_run_with_markup_in_its_records_prints_it_as_text(tmp_path):
    from report_helpers import cli, make_run, outcomes

    eps = [dict(e, task="[bold red]evil[/] [link=x]") for e in outcomes(0, "SF", [40])]
    rd = make_run(tmp_path / "r", eps, tasks=(0,), trials=range(2))
    with open(rd.episodes_path, "a") as f:
        f.write("[1]\n")
    proc = cli("table", str(rd.path))
    assert proc.returncode == 0, proc.stderr
    assert "[bold red]evil[/]" in proc.stdout
    assert "line 3 is a JSON list" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
