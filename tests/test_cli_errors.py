"""Mistakes a user can make get one clear line and exit code 2, never a traceback."""

import pytest

from conftest import run_cli


@pytest.mark.parametrize("args,message", [
    (["run", "libero_spatail"], "unknown suite 'libero_spatail' (did you mean 'libero_spatial'?); known: libero_10"),
    (["run", "libero_spatial", "--tasks", "10"], "task 10 is out of range: libero_spatial has tasks 0-9"),
    (["run", "libero_90", "--tasks", "0,95"], "task 95 is out of range: libero_90 has tasks 0-89"),
    (["run", "libero_spatial", "--trials", "51"], "--trials 51 is out of range: libero_spatial has 50 fixed init states"),
    (["run", "libero_spatial", "--trials", "0,50"], "trial 50 is out of range"),
    (["run", "libero_spatial", "--tasks", "zero"], "cannot read task 'zero': use a list like 0,2,5-7"),
    (["run", "libero_spatial", "--policy", "nope"], "unknown policy preset 'nope'"),
    (["run", "libero_spatial", "--chunk-exec", "last"], "unknown chunk-execution rule 'last'"),
    (["run", "libero_spatial", "--step-unit", "seconds"], "unknown --step-unit 'seconds'"),
    (["run", "libero_spatial", "--resume", "/nonexistent/run"], "no nora-bench run there"),
    (["table", "/nonexistent/run"], "is not a nora-bench run folder"),
    # A range runs upwards: never read as empty (= all tasks, 50 trials) or dropped from a list.
    (["run", "libero_spatial", "--tasks", "5-2"], "cannot read task range '5-2' in '5-2': a range runs upwards (write 2-5)"),
    (["run", "libero_spatial", "--trials", "5-2"], "cannot read trial range '5-2'"),
    (["run", "libero_spatial", "--tasks", "0,5-2"], "cannot read task range '5-2' in '0,5-2'"),
    # Text holding Rich markup is printed as text (it used to raise a MarkupError traceback).
    (["run", "libero_spatial", "--tasks", "[/x]"], "cannot read task '[/x]'"),
])
def test_bad_input_gives_one_clear_line(args, message):
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3


def test_a_non_run_folder_with_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = run_cli("run", "libero_spatial", "--tasks", "0", "--trials", "1", "--out", str(tmp_path))
    assert proc.returncode == 2 and "holds no nora-bench run" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_malformed_suite_file_is_named(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nenv: libero\nbenchmark: libero_spatial\nnum_tasks: 10\nmax_steps: 10\nmax_stepz: 3\n")
    proc = run_cli("run", str(bad))
    assert proc.returncode == 2 and "unknown key(s) max_stepz" in proc.stderr
    bad.write_text("name: [unclosed\n")
    proc = run_cli("run", str(bad))
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr


def test_listing_commands_show_presets():
    proc = run_cli("suites")
    assert proc.returncode == 0
    for name in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90", "libero_long"):
        assert name in proc.stdout
    proc = run_cli("policies")
    assert proc.returncode == 0 and "zero" in proc.stdout and "random" in proc.stdout


def one_line_error(proc, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


SUITE = "env: libero\nbenchmark: libero_spatial\nnum_tasks: 10\nmax_steps: 10\n"


@pytest.mark.parametrize("text,message", [
    (b"\xff\xfe\x00n\x00a\x00m\x00e", "is not a YAML text file (not UTF-8: byte 0 is b'\\xff')"),
    (("name: mine\n" + SUITE.replace("10\nmax", "ten\nmax")).encode(), "num_tasks is 'ten' (str), expected int"),
    (("name: ../../x\n" + SUITE).encode(), "suite name '../../x' in"),
    (("name: /tmp/abs\n" + SUITE).encode(), "suite name '/tmp/abs' in"),
    (("name: '[red]x'\n" + SUITE).encode(), "suite name '[red]x' in"),
])
def test_bad_suite_files_are_one_line(tmp_path, text, message):
    bad = tmp_path / "mine.yaml"
    bad.write_bytes(text)
    one_line_error(run_cli("run", str(bad)), message)


def test_policy_names_that_escape_the_results_folder_are_refused(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("kind: zero\nname: ../../outside\n")
    one_line_error(run_cli("run", "libero_spatial", "--policy", str(bad)), "policy name '../../outside' in")
    assert not (tmp_path.parent.parent / "outside").exists()


def test_unusable_out_folders_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    args = ["run", "libero_spatial", "--tasks", "0", "--trials", "1"]
    one_line_error(run_cli(*args, "--out", str(a_file)), f"--out {a_file} is a file, not a folder")
    one_line_error(run_cli(*args, "--out", str(a_file / "run")), f"cannot write the run folder {a_file / 'run'}")
    assert a_file.read_text() == "mine"


def test_garbage_config_on_resume_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(b"\x00\x01 garbage: [")
    one_line_error(run_cli("run", "libero_spatial", "--tasks", "0", "--trials", "1", "--resume", str(run)),
                   f"{run / 'config.yaml'} cannot be read")
    (run / "config.yaml").write_text("- just\n- a list\n")
    one_line_error(run_cli("table", str(run)), "is not a config.yaml nora-bench wrote")


def test_report_out_that_cannot_be_written_is_one_line(tmp_path):
    from report_helpers import make_run, outcomes

    make_run(tmp_path / "r", outcomes(0, "SF", [40]), tasks=(0,), trials=range(2))
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    one_line_error(run_cli("report", str(tmp_path / "r"), "--out", str(a_file / "rep")), "choose a writable --out folder")
    make_run(tmp_path / "s", outcomes(0, "FF"), tasks=(0,), trials=range(2))
    one_line_error(run_cli("compare", str(tmp_path / "r"), str(tmp_path / "s"), "--out", str(a_file / "cmp")),
                   "choose a writable --out folder")
