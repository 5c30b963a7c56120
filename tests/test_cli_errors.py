"""Mistakes a user can make get one clear line and exit code 2, never a traceback."""

import pytest
from conftest import run_cli


@pytest.mark.parametrize("args,message", [
    (["run", "libero_spatail"], "unknown suite 'libero_spatail' (did you mean 'libero_spatial'?)"),
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


def policy_file(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return str(path)


RUN = ["run", "libero_object", "--tasks", "0", "--trials", "1", "--max-steps", "5", "--no-video", "--workers", "1"]


@pytest.mark.parametrize("preset,message", [
    ('kind: zero\nhorizon: "five"\n', "policy preset 'mine' (kind zero): horizon is 'five' (str), expected int"),
    ("kind: zero\ntrust_remote_code: true\n", "unknown key(s) trust_remote_code; ZeroPolicy takes: cameras, horizon"),
    # A module:Class kind imports code (documented: presets are code-trusted), but only a policy class is used.
    ('kind: "os:system"\ncommand: "touch {marker}"\n', "policy kind 'os:system' in preset 'mine' is not a policy"),
    ('kind: "collections:OrderedDict"\n', "collections:OrderedDict lacks start_episode, act"),
])
def test_preset_mistakes_are_refused_before_the_run(tmp_path, preset, message):
    marker = tmp_path / "ran"
    proc = run_cli(*RUN, "--policy", policy_file(tmp_path, preset.format(marker=marker)), "--out", str(tmp_path / "r"))
    one_line_error(proc, message)
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_unreachable_ray_address_is_one_line_in_seconds(tmp_path):
    proc = run_cli(*RUN, "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "r"), timeout=120)
    one_line_error(proc, "cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused)")


@pytest.mark.parametrize("mode", ["actor", "local"])
def test_a_policy_that_cannot_be_built_is_one_line_before_any_episode(tmp_path, mode):
    """Its construction fails inside a Ray actor (a config.json that is not JSON): the driver awaits
    the first actor's construction and says why, instead of waiting at 0/1 forever."""
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    policy = policy_file(tmp_path, f'kind: "fault_policies:BrokenBuildPolicy"\npath: "{bad}"\n')
    proc = run_cli(*RUN, "--policy", policy, "--policy-mode", mode, "--out", str(tmp_path / "r"), timeout=300)
    one_line_error(proc, "cannot build policy 'mine' (kind fault_policies:BrokenBuildPolicy): JSONDecodeError")
    assert not (tmp_path / "r" / "episodes.jsonl").exists()


def test_a_policy_that_fails_every_query_is_a_setup_error_not_a_zero(tmp_path):
    policy = policy_file(tmp_path, 'kind: "fault_policies:RaisingPolicy"\n')
    proc = run_cli(*RUN, "--policy", policy, "--out", str(tmp_path / "r"), timeout=300)
    one_line_error(proc, "policy 'mine' failed before its first action in 1 episode (policy raised ValueError: "
                         "this policy is broken): a setup error, not a result")
    assert not (tmp_path / "r" / "episodes.jsonl").exists()


def test_a_policy_replica_that_could_never_be_placed_is_one_line(tmp_path):
    proc = run_cli(*RUN, "--policy-mode", "actor", "--policy-gpus", "64", "--out", str(tmp_path / "r"), timeout=300)
    one_line_error(proc, "a policy replica needs 64 GPU (the cluster has")


def test_run_mistakes_that_used_to_show_per_episode_are_refused_before_the_run(tmp_path):
    """A benchmark that does not exist, trials beyond the benchmark's init states, more distractors than
    the catalog has: each used to error episode by episode and exit 0."""
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nenv: libero\nbenchmark: libero_nonexistent\nnum_tasks: 10\nmax_steps: 10\n")
    one_line_error(run_cli("run", str(suite), "--tasks", "0", "--trials", "1", "--out", str(tmp_path / "a")),
                   "unknown LIBERO benchmark 'libero_nonexistent'; known: libero_10")
    # The suite file claims 60 init states per task; the benchmark has 50.
    suite.write_text("name: s\nenv: libero\nbenchmark: libero_object\nnum_tasks: 10\nmax_steps: 10\nmax_trials: 60\n")
    one_line_error(run_cli("run", str(suite), "--tasks", "0", "--trials", "55", "--out", str(tmp_path / "b")),
                   "trial 54 has no fixed init state: libero_object task 0 has 50 (use --trials 50 or fewer)")
    one_line_error(run_cli("run", "libero_object", "--tasks", "0", "--trials", "1", "--distractors", "1000",
                           "--out", str(tmp_path / "c")), "1000 distractors requested but only")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_a_checkpoint_whose_config_is_not_json_is_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{'model_type': qwen2_5_vl")  # not JSON
    proc = run_cli(*RUN, "--policy", "nora-long-libero-object", "--checkpoint", str(ckpt), "--out", str(tmp_path / "r"))
    one_line_error(proc, f"{ckpt / 'config.json'} is not JSON")
    assert not (tmp_path / "r").exists()
