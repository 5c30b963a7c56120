"""The scripted expert on the real LIBERO simulator: privileged state, skills, Ray path, determinism."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import pytest

from nora_bench.config import RunConfig, load_policy_preset
from nora_bench.envs.libero import LIBERO_ACTION_SPEC
from nora_bench.envs.libero_options import libero_spec_fields
from nora_bench.episode import EpisodeSpec, ProtocolRun
from nora_bench.policies import make_policy
from nora_bench.types import Observation

LIMITS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


def spec(suite: str, task: int, trial: int = 0, state: bool = True, **kw) -> EpisodeSpec:
    return EpisodeSpec(**libero_spec_fields(suite=suite, benchmark=suite, task_id=task, trial=trial, init_state=trial, seed=trial,
                       max_steps=LIMITS[suite], cameras=(), state=state, **kw))


@pytest.fixture(scope="module")
def env():
    from nora_bench.envs import make_env

    e = make_env("libero")
    try:
        yield e
    finally:
        e.close()


class Recorder:
    """The scripted policy, with the observations it saw and the actions it chose written down."""

    def __init__(self, record: list | None, states: list | None):
        self.policy = make_policy(load_policy_preset("scripted"), LIBERO_ACTION_SPEC)
        self.requirements, self.record, self.states = self.policy.requirements, record, states

    def start_episode(self, info):
        self.policy.start_episode(info)

    def act(self, observations):
        if self.states is not None:
            self.states.extend(observations)
        chunks = self.policy.act(observations)
        if self.record is not None:
            self.record.extend(np.asarray(c.actions).copy() for c in chunks)
        return chunks

    def end_episode(self, key):
        self.policy.end_episode(key)


def run_episode(env, s: EpisodeSpec, record: list | None = None, states: list | None = None) -> dict:
    return ProtocolRun(env, s, Recorder(record, states)).run()


def test_privileged_state_only_when_asked_and_no_rendering(env):
    obs = env.reset(spec("libero_goal", 7, state=False))
    assert obs.state is None and obs.images == {}
    # A policy that needs no camera and no video: the env was built without camera observations.
    assert env.sim_env.env.use_camera_obs is False
    obs = env.reset(spec("libero_goal", 7))
    for _ in range(10):  # objects start a few cm up and settle
        obs = env.step(env.dummy_action, render=False).observation
    s = obs.state
    assert s["goal"] == [["turnon", "flat_stove_1"]] and s["goal_status"] == [False]
    knob = s["joints"]["flat_stove_1_button"]
    assert knob["type"] == "hinge" and knob["body"] == "flat_stove_1" and abs(knob["qpos"]) < 0.01
    assert s["sites"]["flat_stove_1_cook_region"]["parent"] == "flat_stove_1"
    for name, b in s["bodies"].items():
        assert np.all(b["lo"] <= b["hi"]), name
        assert np.all(b["boxes"][:, 0] <= b["boxes"][:, 1]), name
    bowl = s["bodies"]["akita_black_bowl_1"]
    assert not bowl["fixture"] and s["bodies"]["wooden_cabinet_1"]["fixture"]
    # The bowl rests on the table: its box bottom is at the table top (0.90 m in this scene).
    assert abs(bowl["lo"][2] - s["bodies"]["table"]["hi"][2]) < 0.01
    # Drawer joints and the drawers' handles (their moving boxes) are there for the Open skill.
    drawer = s["joints"]["wooden_cabinet_1_middle_level"]
    assert drawer["type"] == "slide" and len(drawer["boxes"]) > 3


@pytest.mark.parametrize("suite,task,what", [
    ("libero_object", 0, "pick and place into a basket (In region)"),
    ("libero_goal", 0, "open a drawer (Open)"),
    ("libero_goal", 7, "turn the stove knob (TurnOn)"),
    ("libero_goal", 5, "carry a plate by its rim onto a table region"),
    ("libero_10", 9, "carry a mug into a microwave by its handle, then swing the door shut (In box, Close door)"),
])
def test_expert_solves_each_skill(env, suite, task, what):
    out = run_episode(env, spec(suite, task))
    assert out.success is True, f"{what}: {out}"
    assert out.termination == "success" and 0 < out.env_steps < LIMITS[suite]


def test_plate_without_a_rim_grasp_is_pushed_instead(env, monkeypatch):
    from nora_bench.policies.scripted_skills import Planner

    pushed = []
    grasps, push = Planner.grasp_candidates, Planner.push_to
    monkeypatch.setattr(Planner, "grasp_candidates", lambda self, obj: [] if "plate" in obj else grasps(self, obj))
    monkeypatch.setattr(Planner, "push_to", lambda self, obj, region: pushed.append(obj) or push(self, obj, region))
    out = run_episode(env, spec("libero_goal", 5))
    assert pushed == ["plate_1"] and out.success is True, out


def test_expert_is_deterministic(env):
    a, b, seen = [], [], []
    s = spec("libero_spatial", 1, trial=3)
    out_a = run_episode(env, s, a, seen)
    out_b = run_episode(env, s, b)
    # Same episode twice: same outcome and length. (The simulator after a soft reset differs in the
    # last digits, about 1e-6, so the actions are compared to 1e-3.)
    assert out_a.success and out_a.env_steps == out_b.env_steps
    assert len(a) == len(b) and all(np.allclose(x, y, atol=1e-3) for x, y in zip(a, b))
    # The policy itself is exactly deterministic: the same observations give the same actions.
    policy = make_policy(load_policy_preset("scripted"), LIBERO_ACTION_SPEC)
    policy.start_episode(s.episode_info())
    replay = [policy.act([obs])[0].actions for obs in seen]
    assert all(np.array_equal(x, y) for x, y in zip(a, replay))


def test_unsupported_goal_is_reported_not_failed(env):
    # libero_90 task 35 is (Open microwave_1): pulling a shut door open by its handle is not a skill.
    out = run_episode(env, spec("libero_90", 35))
    assert out.termination == "policy_stop" and out.success is False
    assert out.error.startswith("unsupported: no skill for goal predicate open microwave_1")
    assert out.env_steps == 0  # it says so before moving


def test_policy_without_state_stops_with_reason():
    policy = make_policy(load_policy_preset("scripted"), LIBERO_ACTION_SPEC)
    chunk = policy.act([Observation(instruction="x", episode="e")])[0]
    assert chunk.stop and chunk.stop.startswith("unsupported: the env gives no privileged state")


def test_ray_path_records_success(tmp_path):
    """The expert through the scheduler's real Ray env workers, as a VLA would run."""
    import ray

    from nora_bench.results import load, task_table
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    config = RunConfig.resolve(suite="libero_object", policy="scripted", tasks="3", trials=2, video=False)
    try:
        Scheduler(config, RunDir(tmp_path / "run"), ExecOptions(workers=2, progress=False)).run()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    df = load(tmp_path / "run")
    assert len(df) == 2 and df["success"].tolist() == [True, True]
    assert set(df["policy"]) == {"scripted"} and df["video"].isna().all()
    assert task_table(df)["success_rate"].tolist() == [1.0]
