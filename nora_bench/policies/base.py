"""The one policy interface: a batch of observations in, one action chunk per observation out.

    requirements: Requirements                        # what the env must render / provide
    start_episode(info: EpisodeInfo) -> None          # after env.reset (the instruction is known)
    act(observations) -> list[ActionChunk]            # batched; obs.episode == info.key
    end_episode(key: str) -> None                     # free per-episode state; always called, also on error

A policy is built for one env's `ActionSpec` (`make_policy(preset, action_spec)`): the gripper
values it emits are in that spec's convention, camera names resolve through its aliases.
"""

from __future__ import annotations

from typing import Protocol

from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, Observation, Requirements


class Policy(Protocol):
    requirements: Requirements

    def start_episode(self, info: EpisodeInfo) -> None: ...

    def act(self, observations: list[Observation]) -> list[ActionChunk]: ...

    def end_episode(self, key: str) -> None: ...




class FunctionPolicy:
    """A policy from a function `observation -> ActionChunk` (no per-episode state): for tests,
    benchmarks and experiments that script a policy in a few lines."""

    def __init__(self, act_one, requirements: Requirements = Requirements()):
        self.act_one, self.requirements = act_one, requirements

    def start_episode(self, info: EpisodeInfo) -> None:
        pass

    def act(self, observations: list[Observation]) -> list[ActionChunk]:
        return [self.act_one(o) for o in observations]

    def end_episode(self, key: str) -> None:
        pass


__all__ = ["Policy", "FunctionPolicy", "ActionChunk", "ActionSpec", "EpisodeInfo", "Observation", "Requirements"]
