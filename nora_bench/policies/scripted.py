"""A scripted expert that solves LIBERO tasks from privileged simulator state.

It reads the task's BDDL goal and the poses of objects, fixtures and joints (envs/libero_state.py)
and plans in the same 7-D delta end-effector action space the VLAs use, one action per query.
Each goal predicate becomes a skill (scripted_skills.py): pick-and-place for On / In (a mug goes
into a microwave by its handle), pull a handle for Open, push a drawer front or swing a door for
Close, turn a knob for TurnOn. A predicate the
expert has no skill for ends the episode with the termination reason `policy_stop` and the error
"unsupported: ..." so it is counted, never silently failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nora_bench import UserError
from nora_bench.policies.config import PolicyConfig
from nora_bench.policies.scripted_skills import Planner
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, Requirements


@dataclass(frozen=True, kw_only=True)
class ScriptedConfig(PolicyConfig):
    cameras: tuple[str, ...] = ()  # rendered for videos only: the expert reads state
    state: bool = True  # privileged state: required
    max_grasp_attempts: int = 3
    # A handicapped variant for comparisons (scripted-noisy): Gaussian noise of this standard
    # deviation on the six arm dimensions of every action, seeded per episode. 0: the expert.
    action_noise: float = 0.0

    def check(self) -> None:
        if not self.state:
            raise UserError("the scripted policy needs privileged state: set `state: true` in its preset")
        if self.action_noise < 0:
            raise UserError(f"action_noise must be >= 0 (got {self.action_noise})")
        if self.max_grasp_attempts < 1:
            raise UserError(f"max_grasp_attempts must be >= 1 (got {self.max_grasp_attempts})")

    def requirements(self) -> Requirements:
        # It plans in LIBERO's action convention (scripted_skills: -1 open, +1 close).
        return Requirements(cameras=self.cameras, state=True, gripper="libero")


class ScriptedPolicy:
    """The privileged-state expert; one `Planner` per episode, keyed by the episode key."""

    config_class = ScriptedConfig

    def __init__(self, config: ScriptedConfig, action_spec: ActionSpec):
        self.requirements = config.requirements()
        self.max_grasp_attempts = config.max_grasp_attempts
        self.action_noise = float(config.action_noise)
        self._noise: dict[str, np.random.Generator] = {}
        self._planners: dict[str, Planner] = {}

    def start_episode(self, info: EpisodeInfo) -> None:
        self._planners[info.key] = Planner(seed=info.seed, max_grasp_attempts=self.max_grasp_attempts)
        self._noise[info.key] = np.random.default_rng([info.seed, 0xA11CE])

    def end_episode(self, key: str) -> None:
        self._planners.pop(key, None)
        self._noise.pop(key, None)

    def act(self, observations) -> list[ActionChunk]:
        out = []
        for obs in observations:
            if obs.state is None or "bodies" not in obs.state:
                out.append(ActionChunk(np.zeros((1, 7)), stop="unsupported: the env gives no privileged state "
                                       "(the scripted expert runs on LIBERO only)"))
                continue
            planner = self._planners.get(obs.episode)
            if planner is None:  # an episode started without start_episode: plan with a fixed seed
                planner = self._planners[obs.episode] = Planner(seed=0, max_grasp_attempts=self.max_grasp_attempts)
            action, stop = planner.step(obs.state)
            if self.action_noise and stop is None:
                rng = self._noise.setdefault(obs.episode, np.random.default_rng(0))
                action = np.array(action, dtype=float)
                action[:6] = np.clip(action[:6] + rng.normal(0.0, self.action_noise, 6), -1.0, 1.0)
            out.append(ActionChunk(action[None, :], stop=stop))
        return out

