"""Chunk-execution rules: parsing, the executor's arithmetic, and the step / query / render accounting
of the episode protocol on a real LIBERO env driven by a scripted action sequence."""

from __future__ import annotations

import numpy as np
import pytest

from nora_bench import UserError
from nora_bench.chunking import ChunkRule
from nora_bench.envs.base import Env
from nora_bench.envs.libero import LIBERO_ACTION_SPEC
from nora_bench.policies.base import ActionChunk, FunctionPolicy

T = 5  # actions per chunk, as NORA-LONG predicts


def scripted_chunk(q: int, length: int = T) -> np.ndarray:
    """Query q's chunk: row r moves 1 mm * (q + 1) along x and tags (q, r) in the rotation dims."""
    chunk = np.zeros((length, 7))
    chunk[:, 0] = 0.001 * (q + 1)
    chunk[:, 3] = q * 1e-3
    chunk[:, 4] = np.arange(length) * 1e-4
    chunk[:, 6] = -1.0
    return chunk


# -- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, canonical", [
    ("all", "all"), ("first", "first"), ("first:1", "first"), ("first:3", "first:3"),
    ("ensemble", "ensemble"), ("ensemble:0.01", "ensemble"), ("ensemble:0.5", "ensemble:0.5"), ("ensemble:0", "ensemble:0"),
])
def test_rule_round_trip(text, canonical):
    assert str(ChunkRule.parse(text)) == canonical
    assert ChunkRule.parse(canonical) == ChunkRule.parse(text)


@pytest.mark.parametrize("bad", ["", "some", "first:0", "first:-2", "first:x", "all:3", "ensemble:-1", "ensemble:nan"])
def test_bad_rule_is_a_clear_error(bad):
    with pytest.raises(UserError, match="use one of: all, first, first:K"):
        ChunkRule.parse(bad)


# -- the executor alone --------------------------------------------------------------------------------
def drive(rule: str, steps: int) -> tuple[list[np.ndarray], int]:
    ex = ChunkRule.parse(rule).executor()
    actions, queries = [], 0
    for _ in range(steps):
        if ex.needs_query():
            ex.push(scripted_chunk(queries))
            queries += 1
        actions.append(ex.pop())
    return actions, queries


def expected_ensemble(t: int, m: float) -> np.ndarray:
    """ACT's temporal ensemble for step t, written out: chunks q = t-T+1..t predict step t at row t-q;
    the oldest prediction gets weight exp(0), the next exp(-m), ..."""
    qs = [q for q in range(t + 1) if t - q < T]
    w = np.exp(-m * np.arange(len(qs)))
    return sum(wi * scripted_chunk(q)[t - q] for wi, q in zip(w, qs)) / w.sum()


@pytest.mark.parametrize("m", [0.01, 0.0, 1.0])
def test_ensemble_averages_overlapping_predictions_with_act_weights(m):
    rule = "ensemble" if m == 0.01 else f"ensemble:{m:g}"
    actions, queries = drive(rule, 12)
    assert queries == 12
    for t, a in enumerate(actions):
        np.testing.assert_allclose(a, expected_ensemble(t, m), rtol=0, atol=1e-12)
    # The weights matter: with m=1 the oldest prediction dominates, with m=0 all count equally.
    if m == 1.0:
        assert abs(actions[8][3] - 4e-3) < abs(actions[8][3] - 6e-3)


def test_first_k_longer_than_the_chunk_executes_the_whole_chunk():
    actions, queries = drive("first:7", 12)
    assert queries == 3
    np.testing.assert_array_equal(np.stack(actions[:5]), scripted_chunk(0))


# -- the protocol on a real LIBERO env -----------------------------------------------------------------
class RecordingEnv(Env):
    """The real LiberoEnv, with every step's action and render flag written down."""

    action_spec = LIBERO_ACTION_SPEC

    def __init__(self, env):
        self.env = env
        self.log: list[tuple[np.ndarray, bool]] = []

    def reset(self, spec):
        self.log = []
        return self.env.reset(spec)

    def step(self, action, render=True):
        self.log.append((np.array(action), render))
        return self.env.step(action, render=render)

    def frame(self, obs):
        return self.env.frame(obs)

    def episode_info(self):
        return self.env.episode_info()

    def close(self):
        self.env.close()


class ScriptedPolicy(FunctionPolicy):
    """Answers query q with scripted_chunk(q); fails the test if it ever gets an unrendered image."""

    def __init__(self):
        super().__init__(self.answer)
        self.queries = 0

    def answer(self, obs):
        assert obs.images["agentview"].shape == (128, 128, 3)
        chunk = scripted_chunk(self.queries)
        self.queries += 1
        return ActionChunk(chunk)


@pytest.fixture(scope="module")
def libero_env():
    from nora_bench.envs import make_env

    env = make_env("libero")
    try:
        yield RecordingEnv(env)
    finally:
        env.close()


def run_episode(env, rule, max_steps, step_unit="env_steps", video=None, wait=2):
    from nora_bench.envs.libero_options import libero_spec_fields
    from nora_bench.episode import EpisodeSpec, ProtocolRun

    spec = EpisodeSpec(**libero_spec_fields(suite="libero_spatial", benchmark="libero_spatial", task_id=0, trial=0, init_state=0,
                       seed=1, max_steps=max_steps, step_unit=step_unit, num_steps_wait=wait, chunk_exec=rule,
                       camera_size=128, cameras=("agentview",), video_cameras=("agentview",) if video else (),
                       video_frames=video or "steps"))
    frames = []
    out = ProtocolRun(env, spec, ScriptedPolicy(), frames.append if video else None).run()
    steps = env.log[wait:]  # the settle steps come first
    return out, [a for a, _ in steps], [i for i, (_, r) in enumerate(steps) if r], frames


# rule, limit, unit -> env steps, queries, executed (query, row) pairs, steps whose frame is rendered
CASES = [
    ("all", 12, "env_steps", 12, 3, [(q, r) for q in range(3) for r in range(5)][:12], [4, 9]),
    ("first", 12, "env_steps", 12, 12, [(q, 0) for q in range(12)], list(range(11))),
    ("first:2", 12, "env_steps", 12, 6, [(q, r) for q in range(6) for r in range(2)], [1, 3, 5, 7, 9]),
    ("all", 3, "queries", 15, 3, [(q, r) for q in range(3) for r in range(5)], [4, 9]),
    ("first:2", 3, "queries", 6, 3, [(q, r) for q in range(3) for r in range(2)], [1, 3]),
    ("ensemble", 6, "env_steps", 6, 6, None, list(range(5))),
]


@pytest.mark.parametrize("rule, limit, unit, env_steps, queries, executed, rendered", CASES)
def test_step_query_and_render_accounting(libero_env, rule, limit, unit, env_steps, queries, executed, rendered):
    out, actions, rendered_steps, _ = run_episode(libero_env, rule, limit, unit)
    assert out.termination == "step_limit"
    assert (out.env_steps, out.queries) == (env_steps, queries)
    assert len(actions) == env_steps
    if executed is None:  # ensemble: every step averages the chunks that cover it
        expected = [expected_ensemble(t, 0.01) for t in range(env_steps)]
    else:
        expected = [scripted_chunk(q)[r] for q, r in executed]
    np.testing.assert_allclose(np.stack(actions), np.stack(expected), atol=1e-12)
    # Only observations the policy looks at are rendered (none after the last query the limit allows).
    assert rendered_steps == rendered


def test_video_frames_every_step_or_query_steps_only(libero_env):
    out, _, rendered, frames = run_episode(libero_env, "all", 12, video="steps")
    assert rendered == list(range(12)) and len(frames) == 1 + 12  # the first observation, then every step
    out, _, rendered, frames = run_episode(libero_env, "all", 12, video="queries")
    assert rendered == [4, 9] and len(frames) == 3  # one frame per policy query
    assert all(f.shape == (128, 128, 3) and f.dtype == np.uint8 for f in frames)


def test_first_observation_has_images_without_settle_steps(libero_env):
    # The previous episode ended on an unrendered step; the reset observation must still be rendered.
    run_episode(libero_env, "all", 3)
    assert libero_env.log[-1][1] is False
    out, _, _, _ = run_episode(libero_env, "first", 2, wait=0)
    assert out.queries == 2


def test_chunk_rule_is_recorded_in_every_episode_record(tmp_path):
    from nora_bench.config import RunConfig
    from nora_bench.run.rundir import RunDir
    from nora_bench.run.scheduler import ExecOptions, Scheduler

    config = RunConfig.resolve(suite="libero_spatial", policy="zero", tasks="0", trials=2, chunk_exec="first:3",
                               max_steps=4, video=False)
    Scheduler(config, RunDir(tmp_path), ExecOptions(in_process=True)).run()
    records = RunDir(tmp_path).records()
    assert [r["chunk_exec"] for r in records] == ["first:3", "first:3"]
    assert all(r["env_steps"] == 4 and r["step_unit"] == "env_steps" and r["success"] is False for r in records)
