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
