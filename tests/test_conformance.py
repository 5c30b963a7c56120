"""Every registered env kind and policy kind through the same short script, with the specs they declare
(in the spirit of gymnasium's `utils.env_checker.check_env`): a new kind registered without keeping the
contract fails here. Real LIBERO, the real WidowX wire protocol against the stand-in robot, tiny models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import test_widowx

from nora_bench.config import load_policy_preset
from nora_bench.envs import ENV_KINDS, env_class
from nora_bench.envs.base import Env
from nora_bench.envs.libero_options import libero_spec_fields
from nora_bench.episode import EpisodeSpec, ProtocolRun
from nora_bench.policies import KINDS, PolicyConfig, make_policy, policy_class, policy_config, preset_requirements
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, Observation, Requirements, StepResult


def test_every_registered_kind_is_known_here():
    # A new kind needs its case below (a spec to reset with, a preset to build from).
    assert set(ENV_KINDS) == set(ENV_SPECS) and set(KINDS) == set(POLICY_PRESETS)


# -- env kinds ------------------------------------------------------------------------------------------
def libero_spec(ctx) -> EpisodeSpec:
    return EpisodeSpec(**libero_spec_fields(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=0, init_state=0, seed=0,
                       max_steps=3, cameras=("agentview",), video_cameras=("agentview",), camera_size=64))


def widowx_spec(ctx) -> EpisodeSpec:
    port = ctx["sim_server"]()
    return EpisodeSpec(suite="widowx_real", task_id=0, trial=0, init_state=0, seed=0, max_steps=3, env="widowx",
                       num_steps_wait=0, cameras=("agentview",), video_cameras=("agentview",),
                       env_options=(("robot_host", "127.0.0.1"), ("robot_port", port),
                                    ("task", {"name": "t", "instruction": "put the carrot in pot"})))


def widowx_env():
    from nora_bench.envs.widowx import UnattendedOperator, WidowXEnv

    return WidowXEnv(UnattendedOperator())


def fake_spec(ctx) -> EpisodeSpec:
    return EpisodeSpec(suite="fake", task_id=0, trial=0, init_state=0, seed=0, max_steps=3, env="fake",
                       cameras=("agentview",), video_cameras=("agentview",), camera_size=64)


sim_server = test_widowx.sim_server  # the stand-in robot fixture, shared

ENV_SPECS = {"libero": (libero_spec, None), "widowx": (widowx_spec, widowx_env), "fake": (fake_spec, None)}




@pytest.mark.parametrize("kind", sorted(ENV_KINDS))
def test_env_kind_keeps_the_contract(kind, sim_server):
    cls = env_class(kind)
    assert issubclass(cls, Env) and cls.kind == kind
    spec: ActionSpec = cls.action_spec
    assert isinstance(spec, ActionSpec) and spec.dim >= 2 and spec.cameras
    assert spec.dummy_action.shape == (spec.dim,) and spec.dummy_action[-1] == spec.gripper.open
    for alias, canonical in spec.camera_aliases:  # every alias names a camera the env has
        assert spec.resolve_camera(alias) == canonical in spec.cameras
    assert isinstance(cls.operator_driven, bool) and cls.video_fps({}) > 0
    assert all(isinstance(p, str) for p in cls.versions())

    make_spec, build = ENV_SPECS[kind]
    episode = make_spec({"sim_server": sim_server})
    env = build() if build else cls()
    try:
        obs = env.reset(episode)
        assert isinstance(obs, Observation) and obs.episode == episode.key and obs.instruction
        assert set(obs.images) == {"agentview"} and obs.images["agentview"].dtype == np.uint8
        assert env.info["instruction"] == obs.instruction and env.info["task"]
        r = env.step(env.dummy_action, render=True)
        assert isinstance(r, StepResult) and r.failure is None
        frame = env.frame(r.observation)
        assert frame is not None and frame.ndim == 3 and frame.shape[2] == 3
        r = env.step(env.dummy_action, render=False)
        assert isinstance(r.observation, Observation)
        assert isinstance(env.episode_info(), dict)
    finally:
        env.close()


# -- policy kinds ---------------------------------------------------------------------------------------
def tiny_nora(tmp_path) -> dict:
    from nora_bench.policies.tiny_nora import build_tiny_nora

    path = build_tiny_nora(tmp_path / "nora", time_horizon=1)
    return {"kind": "nora", "name": "tiny", "checkpoint": str(path), "norm_stats": "nora_libero",
            "unnorm_key": "libero_spatial", "gripper": "libero", "max_new_tokens": 8, "device": "cpu"}


def tiny_nora15(tmp_path) -> dict:
    from nora_bench.policies.tiny_nora15 import build_tiny_nora15

    path = build_tiny_nora15(tmp_path / "nora15", seed=3)
    return {"kind": "nora15", "name": "tiny15", "checkpoint": str(path), "norm_stats": "nora15_libero",
            "unnorm_key": "libero_spatial_no_noops", "device": "cpu", "dtype": "fp32"}


def openpi_remote(tmp_path) -> dict:
    """The remote kind against the published openpi server (tests/remote_helpers.py), stopped at exit."""
    import atexit

    from tests.remote_helpers import free_port, start_server, stop

    port = free_port()
    proc = start_server("openpi-server", port)
    atexit.register(stop, proc)
    return {"kind": "remote", "name": "remote", "url": f"ws://127.0.0.1:{port}"}


# LIBERO's proprioception, for policies that ask for state (the remote layouts send it).
STATE = {"robot0_eef_pos": np.array([0.1, -0.2, 1.0]), "robot0_eef_quat": np.array([0.9, 0.1, -0.2, 0.37]),
         "robot0_gripper_qpos": np.array([0.039, -0.039])}

POLICY_PRESETS = {
    "remote": openpi_remote,
    "zero": lambda tmp: load_policy_preset("zero-agentview"),
    "random": lambda tmp: load_policy_preset("random"),
    "scripted": lambda tmp: load_policy_preset("scripted"),
    "nora": tiny_nora,
    "nora15": tiny_nora15,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_policy_kind_keeps_the_contract(kind, tmp_path):
    from nora_bench.envs.libero import LIBERO_ACTION_SPEC

    preset = POLICY_PRESETS[kind](tmp_path)
    cls = policy_class(preset)
    for method in ("start_episode", "act", "end_episode"):
        assert callable(getattr(cls, method)), method
    # A registered kind declares its config dataclass (not one derived from its constructor).
    assert issubclass(cls.config_class, PolicyConfig) and dataclasses.is_dataclass(cls.config_class)
    assert type(policy_config(preset)) is cls.config_class
    needs = preset_requirements(preset)
    policy = make_policy(preset, LIBERO_ACTION_SPEC)
    assert isinstance(policy.requirements, Requirements)
    assert policy.requirements.cameras == needs.cameras and policy.requirements.state == needs.state

    rng = np.random.default_rng(0)
    infos = [EpisodeInfo(key=f"s/task000/trial{i:02d}", suite="s", task_id=0, trial=i, init_state=i, seed=i,
                         instruction="put the bowl on the plate") for i in range(2)]
    assert EpisodeInfo.from_dict(infos[0].to_dict()) == infos[0]
    for info in infos:
        policy.start_episode(info)
    obs = [Observation(info.instruction, episode=info.key,
                       images={c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for c in needs.cameras},
                       state=dict(STATE) if needs.state else None)
           for info in infos]
    chunks = policy.act(obs)
    assert len(chunks) == len(obs) and all(isinstance(c, ActionChunk) for c in chunks)
    for c in chunks:
        if c.stop is None:  # the scripted expert without privileged state stops, with its reason
            a = np.asarray(c.actions)
            assert a.ndim == 2 and a.shape[1] == LIBERO_ACTION_SPEC.dim and np.isfinite(a).all()
            if kind == "remote":  # a server's actions are the server's (here an echo of the inputs)
                continue
            # Gripper values in the env's convention (LIBERO: -1 open, +1 close).
            assert set(np.unique(a[:, -1])) <= {LIBERO_ACTION_SPEC.gripper.open, LIBERO_ACTION_SPEC.gripper.close}
        else:
            assert c.stop.startswith("unsupported")
    for info in infos:
        policy.end_episode(info.key)


def test_the_protocol_starts_after_reset_and_always_ends_the_episode():
    class Recording:
        requirements = Requirements(cameras=())

        def __init__(self):
            self.calls = []

        def start_episode(self, info):
            self.calls.append(("start", info.key, info.instruction))

        def act(self, observations):
            raise RuntimeError("a broken policy")

        def end_episode(self, key):
            self.calls.append(("end", key))

    class OneStepEnv(Env):
        def reset(self, spec):
            self.info = {"task": "t", "instruction": "do it"}
            return Observation("do it", episode=spec.key)

        def step(self, action, render=True):
            return StepResult(Observation("do it"), success=False)

    spec = EpisodeSpec(suite="s", task_id=0, trial=0, init_state=0, seed=0, max_steps=3, num_steps_wait=0)
    policy = Recording()
    out = ProtocolRun(OneStepEnv(), spec, policy).run()
    assert out.termination == "policy_error" and "a broken policy" in out.error
    assert policy.calls == [("start", spec.key, "do it"), ("end", spec.key)]


# -- the outcome and the record -----------------------------------------------------------------------
# The keys of an episodes.jsonl line, in order (RunDir.append adds config_hash): old run folders load,
# resume and report because this stays as it is.
RECORD_KEYS = ["key", "suite", "task_id", "task", "instruction", "trial", "init_state", "seed", "success", "termination",
               "env_steps", "queries", "max_steps", "step_unit", "chunk_exec", "success_check", "distractors", "family",
               "level", "base_suite", "decode_failures", "failure_reasons", "error", "traceback", "attempts",
               "attempt_errors", "policy", "checkpoint", "video", "timings", "env_info", "policy_info", "worker", "node",
               "finished_at", "harness_version", "versions"]


def test_an_outcome_takes_only_the_declared_terminations_and_becomes_a_record_of_the_known_shape():
    from nora_bench.episode import TERMINATIONS, EpisodeOutcome, EpisodeResult

    with pytest.raises(ValueError, match="unknown termination 'timeout'"):
        EpisodeOutcome(success=False, termination="timeout")
    errored = EpisodeOutcome.errored("env worker died: boom")
    assert (errored.success, errored.termination, errored.error) == (None, "error", "env worker died: boom")
    assert errored.termination in TERMINATIONS
    spec = EpisodeSpec(**libero_spec_fields(suite="libero_spatial", task_id=2, trial=1, init_state=1, seed=7, max_steps=9, distractors=0))
    out = EpisodeOutcome(success=True, termination="success", env_steps=5, queries=1, task="t", instruction="do it",
                         env_info={"final_state_sha1": "ab"}, worker="w0", timings={"wall_s": 1.0})
    record = EpisodeResult.from_outcome(spec, out, attempts=2, attempt_errors=["first try died"],
                                        perturbation={"family": "base", "level": "", "base_suite": "libero_spatial"},
                                        policy="scripted", checkpoint=None, video=None, finished_at="now",
                                        harness_version="x", versions={}).to_dict()
    assert list(record) == RECORD_KEYS
    assert (record["key"], record["task"], record["instruction"], record["success"], record["env_steps"]) == (
        "libero_spatial/task002/trial01", "t", "do it", True, 5)
    assert (record["attempts"], record["attempt_errors"], record["worker"], record["max_steps"]) == (
        2, ["first try died"], "w0", 9)
    assert record["env_info"] == {"final_state_sha1": "ab"} and record["timings"] == {"wall_s": 1.0}
