"""`success_check`: success at any env step (OpenVLA's script) or only at a chunk's end (NORA's LIBERO script).

declare-lab/nora 6b18c23 `experiments/libero/run_libero_eval_nora.py` executes all actions of a chunk
(`for i in range(len(action)): obs, reward, done, info = env.step(...)`) and then tests `if done:`,
i.e. the `done` of the chunk's last step. The env here is a minimal episode-protocol env whose goal
holds on given steps only, so that the two rules must differ.
"""

from __future__ import annotations

import numpy as np
import pytest

from nora_bench.envs.base import Env, Observation, StepResult
from nora_bench.episode import EpisodeSpec, ProtocolRun
from nora_bench.policies.base import ActionChunk, FunctionPolicy


class GoalOnSteps(Env):
    """Goal holds on the listed env steps (counted after the settle steps); LIBERO's action spec."""

    def __init__(self, success_steps):
        self.success_steps, self.n, self.settled = set(success_steps), 0, 0

    def reset(self, spec):
        self.n, self.settled = 0, 0
        return Observation("task", episode=spec.key)

    def step(self, action, render=True):
        if self.settled < 10:  # the protocol's settle steps
            self.settled += 1
            return StepResult(Observation("task"), success=False)
        self.n += 1
        return StepResult(Observation("task"), success=self.n in self.success_steps)

    def frame(self, obs):
        return None

    def episode_info(self):
        return {}

    def close(self):
        pass


def run(success_steps, rule, max_steps=4, unit="queries"):
    spec = EpisodeSpec(suite="s", task_id=0, trial=0, init_state=0, seed=0, max_steps=max_steps, step_unit=unit,
                       chunk_exec="all", success_check=rule)
    return ProtocolRun(GoalOnSteps(success_steps), spec, FunctionPolicy(lambda obs: ActionChunk(np.zeros((5, 7))))).run()


@pytest.mark.parametrize("steps,any_step,chunk_end", [
    ({3}, (True, 3), (False, 20)),       # reached mid-chunk, lost by the chunk's end: NORA counts a failure
    ({3, 4, 5}, (True, 3), (True, 5)),   # still holds at the chunk's end: success there
    ({12, 15}, (True, 12), (True, 15)),  # the third chunk
])
def test_any_step_vs_chunk_end(steps, any_step, chunk_end):
    for rule, (success, env_steps) in (("any_step", any_step), ("chunk_end", chunk_end)):
        out = run(steps, rule)
        assert (out.success, out.env_steps) == (success, env_steps), rule
        assert out.queries == -(-env_steps // 5)


def test_unknown_rule_is_one_line():
    from nora_bench import UserError
    from nora_bench.config import RunConfig

    with pytest.raises(UserError, match="unknown --success-check 'end'.*chunk_end"):
        RunConfig.resolve(suite="libero_spatial", policy="zero", tasks="0", trials=1, video=False, success_check="end")
