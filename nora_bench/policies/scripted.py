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

import numpy as np

from nora_bench import UserError
from nora_bench.policies.scripted_skills import Planner
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, Requirements


class ScriptedPolicy:
    """The privileged-state expert; one `Planner` per episode, keyed by the episode key."""

    def __init__(self, action_spec: ActionSpec, cameras: list[str] | tuple[str, ...] = (), state: bool = True,
                 max_grasp_attempts: int = 3, action_noise: float = 0.0):
        if not state:
            raise UserError("the scripted policy needs privileged state: set `state: true` in its preset")
        self.requirements = self.preset_requirements({"cameras": cameras})
        self.max_grasp_attempts = max_grasp_attempts
        # A handicapped variant for comparisons (scripted-noisy): Gaussian noise of this standard
        # deviation on the six arm dimensions of every action, seeded per episode. 0: the expert.
        if action_noise < 0:
            raise UserError(f"action_noise must be >= 0 (got {action_noise})")
        self.action_noise = float(action_noise)
        self._noise: dict[str, np.random.Generator] = {}
        self._planners: dict[str, Planner] = {}

    @classmethod
    def preset_requirements(cls, params: dict) -> Requirements:
        # It plans in LIBERO's action convention (scripted_skills: -1 open, +1 close).
        return Requirements(cameras=tuple(params.get("cameras", ())), state=True, gripper="libero")

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

