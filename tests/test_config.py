"""Typed configuration: `RunConfig.resolve`, `extends:` in presets and suites, the spec check before a run."""

from __future__ import annotations

import pytest
import yaml

from nora_bench import UserError
from nora_bench.config import RunConfig, load_policy_preset, load_suite


def test_extends_gives_the_base_preset_with_its_own_keys_on_top():
    long_goal = load_policy_preset("nora-long-libero-goal")
    long_spatial = load_policy_preset("nora-long-libero-spatial")
    assert "extends" not in long_goal and long_goal["name"] == "nora-long-libero-goal"
    assert (long_goal["unnorm_key"], long_goal["checkpoint"]) == ("libero_goal", "declare-lab/nora-long-finetuned-libero-goal")
    assert {k: v for k, v in long_goal.items() if k not in ("name", "description", "checkpoint", "unnorm_key")} == \
        {k: v for k, v in long_spatial.items() if k not in ("name", "description", "checkpoint", "unnorm_key")}
    short = load_policy_preset("nora-libero-goal")  # two levels: nora-libero-goal -> nora-long-libero-goal -> spatial
    assert short["time_horizon"] == 1 and short["unnorm_key"] == "libero_goal" and short["gripper"] == "libero"
    d = load_suite("libero_10_distractors")
    base = load_suite("libero_10")
    assert d.distractors == 2 and d.max_steps == base.max_steps and d.benchmark == "libero_10"
    assert d.aliases == [] and base.aliases == ["libero_long"]  # names and aliases are never inherited


def test_extends_mistakes_are_one_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"extends": "nora-long-libero-spatail", "unnorm_key": "libero_goal"}))
    with pytest.raises(UserError, match=r"unknown policy preset to extend 'nora-long-libero-spatail' \(did you mean"):
        load_policy_preset(str(path))
    path.write_text(yaml.safe_dump({"extends": ["zero"]}))
    with pytest.raises(UserError, match="extends is \\['zero'\\], expected the name of another preset"):
        load_policy_preset(str(path))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"extends": "libero_spatial", "name": "mine", "max_step": 5}))
    with pytest.raises(UserError, match="unknown key\\(s\\) max_step"):
        load_suite(str(suite))


def test_a_policy_the_env_cannot_serve_is_refused_before_the_run():
    # NORA pre-trained emits Bridge gripper values; LIBERO takes -1 open / +1 close.
    with pytest.raises(UserError, match="policy preset 'nora' cannot run on a libero suite: .*'bridge' convention"):
        RunConfig.resolve(suite="libero_spatial", policy="nora")
    with pytest.raises(UserError, match="'scripted' cannot run on a widowx suite"):
        RunConfig.resolve(suite="widowx_real", policy="scripted")
    config = RunConfig.resolve(suite="libero_spatial", policy="zero", tasks="0,1", trials=2, seed=3, video=False)
    assert (config.tasks, config.trials, config.seed, config.video) == ([0, 1], [0, 1], 3, False)
