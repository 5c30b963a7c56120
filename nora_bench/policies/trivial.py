"""Plumbing policies: `zero` (the env's dummy action) and `random` (seeded uniform actions)."""

from __future__ import annotations

import time

import numpy as np

from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo, Requirements


class ZeroPolicy:
    """Always the env's dummy action: no motion, gripper open (in the env's convention).

    `latency_s` adds a fixed cost per `act` call, whatever the batch size: a stand-in for a
    model's forward pass in benchmarks of batching.
    """

    def __init__(self, action_spec: ActionSpec, cameras: list[str] | tuple[str, ...] = (), horizon: int = 1,
                 latency_s: float = 0.0):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.dummy_action = action_spec.dummy_action
        self.horizon = horizon
        self.latency_s = latency_s

    def start_episode(self, info: EpisodeInfo) -> None:
        pass

    def act(self, observations):
        if self.latency_s:
            time.sleep(self.latency_s)
        chunk = np.tile(self.dummy_action, (self.horizon, 1))
        return [ActionChunk(chunk.copy()) for _ in observations]

    def end_episode(self, key: str) -> None:
        pass


class RandomPolicy:
    """Uniform actions in [-scale, scale], the gripper open or closed at random (the env's values);
    seeded per episode."""

    def __init__(self, action_spec: ActionSpec, cameras: list[str] | tuple[str, ...] = (), horizon: int = 1,
                 scale: float = 0.5):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.dim, self.gripper = action_spec.dim, action_spec.gripper
        self.horizon = horizon
        self.scale = scale
        self._rngs: dict[str, np.random.Generator] = {}

    def start_episode(self, info: EpisodeInfo) -> None:
        self._rngs[info.key] = np.random.default_rng(info.seed)

    def act(self, observations):
        out = []
        for obs in observations:
            rng = self._rngs[obs.episode]
            chunk = rng.uniform(-self.scale, self.scale, size=(self.horizon, self.dim))
            chunk[:, -1] = np.where(rng.random(self.horizon) < 0.5, self.gripper.open, self.gripper.close)
            out.append(ActionChunk(chunk))
        return out

    def end_episode(self, key: str) -> None:
        self._rngs.pop(key, None)
