"""Repro recipes and `nora-bench verify` on synthetic run folders: consistent, inconsistent, deviating."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from report_helpers import cli_in_process

from nora_bench import UserError
from nora_bench.config import RunConfig
from nora_bench.episode import EpisodeResult
from nora_bench.recipes import load_recipe, recipe_names, verdict
from nora_bench.run.rundir import RunDir


def synthetic_run(folder, successes: int, *, recipe="nora-long-libero-object", versions=None, with_recipe=True,
                  **changes):
    """A run folder as `nora-bench run --recipe` writes it, with `successes` of 500 episodes."""
    r = load_recipe(recipe)
    run = {**r.run, **{k: v for k, v in changes.items() if k in r.run}}
    config = RunConfig.resolve(suite=r.suite, policy=r.policy, trials=run["trials"], chunk_exec=run["chunk_exec"],
                               max_steps=run["max_steps"], step_unit=run["step_unit"], video=False, scene=run["scene"],
                               scene_seed=run["scene_seed"], success_check=run["success_check"])
    config.recipe = r.name if with_recipe else None
    policy = {**config.policy, **{k: v for k, v in r.policy_fields.items() if v is not None}}
    policy.update({k: v for k, v in changes.items() if k in r.policy_fields})
    # What check_preset records on a GPU machine (no hub download here).
    policy["resolved"] = {"dtype": {"bf16": "bfloat16", "fp32": "float32"}[policy["dtype"]], "attn": policy["attn"]}
    config.policy = policy
    rd = RunDir(folder)
    rd.open(config, versions or {"mujoco": "2.3.7", "robosuite": "1.4.0"})
    wins = np.zeros(500, dtype=bool)
    wins[np.random.default_rng(0).choice(500, successes, replace=False)] = True
    for i, win in enumerate(wins):
        task, trial = divmod(i, 50)
        rec = EpisodeResult(key=f"{r.suite}/task{task:03d}/trial{trial:02d}", suite=r.suite, task_id=task, task=f"t{task}",
                            instruction="", trial=trial, init_state=trial, seed=0, success=bool(win),
                            termination="success" if win else "step_limit")
        rd.append(rec.to_dict())
    return folder


def test_recipes_pin_every_field_with_a_source():
    assert {"nora-long-libero-object", "nora-libero-spatial", "nora-long-libero-10"} <= set(recipe_names())
    r = load_recipe("nora-long-libero-object")
    assert r.suite == "libero_object" and r.policy_fields["time_horizon"] == 5 and r.published["rate"] == 0.954
    assert r.run == {"tasks": "all", "trials": 50, "num_steps_wait": 10, "chunk_exec": "all", "max_steps": 500,
                     "step_unit": "queries", "success_check": "chunk_end", "scene": "reference", "scene_seed": 0}
    for key in list(r.run) + list(r.policy_fields) + ["versions", "published"]:
        assert key in r.sources or key in ("checkpoint", "time_horizon"), key
    with pytest.raises(UserError, match="unknown recipe 'nora-long-libero-objct' \\(did you mean 'nora-long-libero-object'"):
        load_recipe("nora-long-libero-objct")


def test_binomial_verdicts():
    assert verdict("s", 477, 500, 0.954).consistent
    v = verdict("s", 335, 500, 0.954)  # declare-lab/nora#11: 67% where 95.4% was published
    assert not v.consistent and v.p_value < 1e-30 and v.ci_high < 0.72


def test_verify_consistent_run(tmp_path):
    folder = synthetic_run(tmp_path / "ok", 472)
    out = run_cli("verify", str(folder))
    assert out.returncode == 0, out.stderr
    assert "consistent" in out.stdout and "INCONSISTENT" not in out.stdout
    assert "94.4%" in out.stdout and "95.4%" in out.stdout
    assert "the recipe's protocol in every pinned field" in out.stdout


def test_verify_inconsistent_run(tmp_path):
    out = cli_in_process("verify", str(synthetic_run(tmp_path / "low", 335)))  # the subprocess run: the test above
    assert out.returncode == 0, out.stderr
    assert "INCONSISTENT" in out.stdout and "67.0%" in out.stdout


def test_verify_lists_every_deviating_field(tmp_path):
    folder = synthetic_run(tmp_path / "dev", 470, step_unit="env_steps", max_steps=280, success_check="any_step",
                           image_resize="openvla", dtype="fp32", versions={"mujoco": "3.3.3", "robosuite": "1.4.0"})
    out = cli_in_process("verify", str(folder))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "deviated from the recipe in 6 field(s)" in text
    for line in ("step_unit: 'env_steps' (run) != 'queries' (recipe", "max_steps: 280 (run) != 500 (recipe",
                 "success_check: 'any_step' (run) != 'chunk_end' (recipe", "image_resize: 'openvla' (run) != 'openvla_tf'",
                 "dtype: 'float32' (run) != 'bfloat16'", "mujoco: 3.3.3 (run) != 2.3.7"):
        assert line in text, line


def test_verify_a_run_without_recipe_names_the_fix(tmp_path):
    folder = synthetic_run(tmp_path / "plain", 335, with_recipe=False)
    out = run_cli("verify", str(folder))
    assert out.returncode == 2 and "--recipe NAME" in out.stderr and "\n" not in out.stderr.strip()
    out = run_cli("verify", str(folder), "--recipe", "nora-long-libero-object")
    assert out.returncode == 0 and "INCONSISTENT" in out.stdout, out.stderr
