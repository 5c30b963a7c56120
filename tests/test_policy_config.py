"""Policy presets become their kind's config dataclass (nora_bench/policies/config.py), checked before
anything is built: unknown keys, missing keys, wrong types and bad values are one UserError naming the
key; a user's `module:Class` kind without a dataclass gets one from its constructor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import run_cli

from nora_bench import UserError
from nora_bench.config import load_policy_preset
from nora_bench.envs.libero import LIBERO_ACTION_SPEC
from nora_bench.policies import (
    KINDS,
    PolicyConfig,
    make_policy,
    override_preset,
    policy_class,
    policy_config,
    preset_requirements,
)
from nora_bench.policies.trivial import ZeroConfig

PRESETS = sorted(p.stem for p in (Path(__file__).parent.parent / "nora_bench/presets/policies").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_is_a_valid_config_of_its_kind(name):
    preset = load_policy_preset(name)
    config = policy_config(preset)
    assert type(config) is policy_class(preset).config_class
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, dataclasses.fields(config)[0].name, None)
    # YAML lists become tuples: a config is immutable all the way down
    assert not any(isinstance(v, list) for v in dataclasses.asdict(config).values())


@pytest.mark.parametrize("preset,message", [
    ({"kind": "zero", "horizon": 0}, "(kind zero): horizon must be >= 1"),
    ({"kind": "zero", "latency_s": "1"}, "(kind zero): latency_s is '1' (str), expected float"),
    ({"kind": "random", "scale": -1}, "scale >= 0"),
    ({"kind": "scripted", "state": False}, "the scripted policy needs privileged state"),
    ({"kind": "scripted", "action_noise": -0.1}, "action_noise must be >= 0"),
    ({"kind": "nora"}, "(kind nora): missing required key(s) checkpoint"),
    ({"kind": "nora", "checkpoint": "x", "decode_fallback": "zeros"}, "unknown decode_fallback 'zeros'"),
    ({"kind": "nora", "checkpoint": "x", "time_horizon": 0}, "time_horizon must be >= 1"),
    ({"kind": "nora", "checkpoint": "x", "image_resize": "bilinear"}, "unknown image_resize 'bilinear'"),
    ({"kind": "nora", "checkpoint": "x", "cameras": []}, "a NORA preset needs one camera"),
    ({"kind": "nora15", "checkpoint": "x", "num_steps": 0}, "num_steps must be >= 1"),
    ({"kind": "nora15", "checkpoint": "x", "gripper": "franka"}, "unknown gripper 'franka'"),
    ({"kind": "remote"}, "missing required key(s) url"),
    ({"kind": "remote", "url": "http://h:1"}, "url 'http://h:1' must start with ws:// or wss://"),
    ({"kind": "remote", "url": "ws://h:1", "protocol": "grpc"}, "unknown protocol 'grpc'"),
    ({"kind": "remote", "url": "ws://h:1", "layout": "droid"}, "unknown layout 'droid'"),
    # A remote policy's images and state follow its layout; a `cameras` key would be silently unused.
    ({"kind": "remote", "url": "ws://h:1", "cameras": ["agentview"]}, "unknown key(s) cameras; RemotePolicy takes: url"),
])
def test_a_bad_preset_is_one_line_naming_the_key(preset, message):
    with pytest.raises(UserError) as e:
        policy_config({"name": "mine", **preset})
    text = str(e.value)
    assert message in text and text.startswith(f"policy preset 'mine' (kind {preset['kind']}): ") and "\n" not in text


def test_a_plain_user_class_gets_a_config_from_its_constructor():
    preset = {"kind": "fault_policies:InterruptingPolicy", "name": "mine", "after": 2}
    config = policy_config(preset)
    assert config.from_constructor and dataclasses.asdict(config) == {"after": 2}
    with pytest.raises(UserError, match="after is 'two' \\(str\\), expected int"):
        policy_config({**preset, "after": "two"})
    with pytest.raises(UserError, match="unknown key\\(s\\) horizon; InterruptingPolicy takes: after"):
        policy_config({**preset, "horizon": 2})
    policy = make_policy(preset, LIBERO_ACTION_SPEC)  # built as Class(action_spec=..., after=2)
    assert policy.after == 2
    # It names no camera: the env renders the third-person view (the documented default).
    assert preset_requirements(preset).cameras == ("agentview",)


def test_a_constructor_with_kwargs_takes_keys_it_does_not_name_unchecked():
    preset = {"kind": "fault_policies:BrokenBuildPolicy", "name": "mine", "path": "x.json", "horizon": 3}
    config = policy_config(preset)
    assert config.as_dict() == {"path": "x.json", "horizon": 3}
    with pytest.raises(UserError, match="missing required key\\(s\\) path"):
        policy_config({"kind": "fault_policies:BrokenBuildPolicy", "name": "mine"})


def test_the_config_belongs_to_the_class_that_defines_the_constructor():
    # RaisingPolicy overrides `act` only: it keeps ZeroPolicy's config; StallOncePolicy extends it.
    assert type(policy_config({"kind": "fault_policies:RaisingPolicy", "horizon": 2})) is ZeroConfig
    stall = policy_config({"kind": "fault_policies:StallOncePolicy", "marker": "m", "episode": "e", "horizon": 2})
    assert isinstance(stall, ZeroConfig) and (stall.marker, stall.horizon, stall.at_query) == ("m", 2, 3)


def test_a_class_that_takes_a_config_must_declare_it(tmp_path, monkeypatch):
    (tmp_path / "undeclared_policy.py").write_text(
        "from nora_bench.policies.trivial import ZeroPolicy\n"
        "class Mine(ZeroPolicy):\n"
        "    def __init__(self, config, action_spec):\n"
        "        super().__init__(config, action_spec)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="undeclared_policy:Mine takes a `config` but declares no `config_class`"):
        policy_config({"kind": "undeclared_policy:Mine", "name": "mine"})
    (tmp_path / "clashing_policy.py").write_text(
        "class Mine:\n"
        "    def __init__(self, action_spec, check: bool = True): ...\n"
        "    def start_episode(self, info): ...\n"
        "    def act(self, observations): ...\n"
        "    def end_episode(self, key): ...\n")
    with pytest.raises(UserError, match="clashing_policy:Mine: constructor parameter `check` is a name the config uses"):
        policy_config({"kind": "clashing_policy:Mine", "name": "mine"})


def test_command_line_overrides_are_checked_against_the_config():
    nora = load_policy_preset("nora")
    assert override_preset(nora, checkpoint="/tmp/ckpt", device=None)["checkpoint"] == "/tmp/ckpt"
    with pytest.raises(UserError, match="--checkpoint does not apply to policy preset 'zero' \\(kind zero\\)"):
        override_preset(load_policy_preset("zero"), checkpoint="/tmp/ckpt")


def test_every_registered_kind_declares_a_config():
    for kind in KINDS:
        cls = policy_class({"kind": kind})
        assert issubclass(cls.config_class, PolicyConfig), kind
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        assert fields and all(not f.startswith("_") for f in fields), kind


def test_policies_command_shows_every_field_a_preset_runs_with():
    proc = run_cli("policies", "nora-long-libero-spatial")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in proc.stdout.splitlines() if line.startswith("│")}
    assert rows["time_horizon"] == ["5", "preset", "int"]
    assert rows["max_new_tokens"] == ["None", "default", "int | None"]  # not in the preset: the default shows
    assert "needs from the env: cameras agentview; state no; gripper convention libero" in proc.stdout
    bad = run_cli("policies", "nosuch")
    assert bad.returncode == 2 and "unknown policy preset 'nosuch'" in bad.stderr
