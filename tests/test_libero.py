"""The LIBERO env against the real simulator: protocol facts, soft reset, render economy, success."""

import numpy as np
import pytest

from nora_bench.envs import make_env
from nora_bench.envs.libero_options import libero_spec_fields
from nora_bench.episode import EpisodeSpec, ProtocolRun
from nora_bench.policies.base import FunctionPolicy
from nora_bench.types import ActionChunk


def spec(task=0, trial=0, cameras=("agentview",), video=(), state=False, suite="libero_spatial", **kw):
    return EpisodeSpec(**libero_spec_fields(suite=suite, benchmark=suite, task_id=task, trial=trial, init_state=trial, seed=0,
                       max_steps=kw.pop("max_steps", 10), cameras=cameras, video_cameras=video, state=state, **kw))


@pytest.fixture(scope="module")
def env():
    e = make_env("libero")
    yield e
    e.close()


def rollout(env, s, actions, render=True):
    """Reset to `s`, settle 10 steps, then apply `actions`; returns (images, eef positions, sim states)."""
    env.reset(s)
    for _ in range(10):
        env.step(env.dummy_action, render=render)
    images, eef, states = [], [], []
    for a in actions:
        r = env.step(a, render=render)
        images.append(r.observation.images.get("agentview"))
        eef.append(env.sim_env.env.robots[0].controller.ee_pos.copy())
        states.append(env.sim_env.get_sim_state().copy())
    return images, np.array(eef), np.array(states)


def test_soft_reset_gives_the_same_trajectory_as_hard_reset(env):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.6, 0.6, size=(12, 7))
    s = spec(task=0, trial=3)
    # 1) the env's first episode follows its constructor's full model load (a hard reset)
    env.close()
    imgs_hard, eef_hard, states_hard = rollout(env, s, actions)
    # 2) disturb the env with another init state and other actions, then reset softly. The
    # disturbance renders nothing (no image of it is looked at; it also leaves rendering switched
    # off, which the soft reset must undo for the images compared below).
    rollout(env, spec(task=0, trial=7), rng.uniform(-1, 1, size=(8, 7)), render=False)
    imgs_soft, eef_soft, states_soft = rollout(env, s, actions)
    # 3) an explicit hard reset (robosuite reloads the model) on the same env; its states are
    # compared, so it renders nothing (rendering changes no state: test_skipping_renders_... below)
    env.sim_env.env.hard_reset = True
    try:
        imgs_hard2, eef_hard2, states_hard2 = rollout(env, s, actions, render=False)
    finally:
        env.sim_env.env.hard_reset = False
    np.testing.assert_array_equal(states_soft, states_hard)
    np.testing.assert_array_equal(states_hard2, states_hard)
    np.testing.assert_array_equal(eef_soft, eef_hard)
    for a, b in zip(imgs_soft, imgs_hard):
        np.testing.assert_array_equal(a, b)
    assert np.abs(eef_hard[-1] - eef_hard[0]).max() > 0.01, "the actions must actually move the arm"


def test_init_state_is_the_benchmark_one_and_image_is_rotated(env):
    from nora_bench.envs.libero import init_states

    s = spec(task=2, trial=5)
    obs = env.reset(s)
    expected = init_states("libero_spatial", 2)[5]
    state = env.sim_env.get_sim_state()
    np.testing.assert_allclose(state[1:], expected[1:], atol=1e-9)  # [0] is sim time
    raw = env.sim_env.env._get_observations()
    np.testing.assert_array_equal(obs.images["agentview"], raw["agentview_image"][::-1, ::-1])
    assert obs.instruction == "pick up the black bowl from table center and place it on the plate"
    assert set(obs.images) == {"agentview"}, "only the cameras asked for are rendered"


def test_skipping_renders_changes_no_observation(env):
    actions = np.random.default_rng(1).uniform(-0.5, 0.5, size=(6, 7))
    s = spec(task=1, trial=0)
    every, eef_a, states_a = rollout(env, s, actions, render=True)
    # render only the last step: physics and the final image must be identical
    env.reset(s)
    for _ in range(10):
        env.step(env.dummy_action, render=False)
    for i, a in enumerate(actions):
        r = env.step(a, render=i == len(actions) - 1)
        if i < len(actions) - 1:
            assert r.observation.images == {}
    np.testing.assert_array_equal(r.observation.images["agentview"], every[-1])
    np.testing.assert_array_equal(env.sim_env.get_sim_state(), states_a[-1])


def test_policy_without_cameras_renders_nothing():
    e = make_env("libero")
    try:
        obs = e.reset(spec(cameras=(), state=True))
        assert obs.images == {}
        assert "robot0_eef_pos" in obs.state
        assert "agentview_image" not in e.sim_env.env._observables or not e.sim_env.env.use_camera_obs
    finally:
        e.close()


def test_success_comes_from_the_simulators_goal_check(env):
    """Put the bowl on the plate by writing the sim state: the env's own BDDL check reports success."""
    s = spec(task=0, trial=0)
    env.reset(s)
    for _ in range(10):
        r = env.step(env.dummy_action, render=False)
    assert not r.success
    sim = env.sim_env.sim
    plate = sim.data.body_xpos[sim.model.body_name2id("plate_1_main")].copy()
    joint = "akita_black_bowl_1_joint0"
    qpos = sim.data.get_joint_qpos(joint).copy()
    qpos[:3] = plate + np.array([0, 0, 0.03])
    sim.data.set_joint_qpos(joint, qpos)
    sim.forward()
    success = False
    for _ in range(30):
        if env.step(env.dummy_action, render=False).success:
            success = True
            break
    assert success
    assert env.sim_env.check_success()


def test_protocol_counts_steps_and_settles(env):
    calls = []

    def act(obs):
        calls.append(obs)
        return ActionChunk(np.tile(env.dummy_action, (3, 1)))

    frames = []
    s = spec(task=0, trial=1, max_steps=7, video=("agentview",))
    out = ProtocolRun(env, s, FunctionPolicy(act), frames.append).run()
    assert out.termination == "step_limit" and out.success is False
    assert out.env_steps == 7 and out.queries == 3  # chunks of 3, rule "all": 3 + 3 + 1
    assert len(calls) == 3 and all("agentview" in o.images for o in calls)
    assert len(frames) == 8  # the settled frame + one per env step
    assert calls[0].instruction.startswith("pick up the black bowl")


@pytest.mark.parametrize("bad,reason", [
    (np.full((1, 7), np.nan), "NaN"),
    (np.zeros((1, 6)), "shape"),
])
def test_unusable_policy_output_is_recorded_with_its_reason(env, bad, reason):
    out = ProtocolRun(env, spec(task=0, trial=0, max_steps=5), FunctionPolicy(lambda obs: ActionChunk(bad))).run()
    assert out.termination == "policy_error"
    assert reason in out.error
    assert out.success is False and out.env_steps == 0


def test_mujoco_imported_first_does_not_crash_rendering_setup():
    # Importing Triton after MuJoCo's GL libraries are loaded segfaults; configure_rendering must
    # then leave Triton alone, and the env must still build and render.
    import os
    import subprocess
    import sys

    code = ("import mujoco\n"
            "from nora_bench.envs import make_env\n"
            "from nora_bench.envs.libero_options import libero_spec_fields\n"
            "from nora_bench.episode import EpisodeSpec\n"
            "env = make_env('libero')\n"
            "obs = env.reset(EpisodeSpec(**libero_spec_fields(suite='libero_spatial', benchmark='libero_spatial', task_id=0, trial=0,\n"
            "                            init_state=0, seed=0, max_steps=5, cameras=('agentview',))))\n"
            "print('frame', obs.images['agentview'].shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MUJOCO_GL": "egl"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "frame (" in out.stdout
