"""Plumbing policies: `zero` (the dummy action) and `random` (seeded uniform actions)."""

from __future__ import annotations

import time

import numpy as np

from nora_bench.policies.base import ActionChunk, Requirements

DUMMY_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


class ZeroPolicy:
    """Always the dummy action: no motion, gripper open.

    `latency_s` adds a fixed cost per `act` call, whatever the batch size: a stand-in for a
    model's forward pass in benchmarks of batching.
    """

    def __init__(self, cameras: list[str] | tuple[str, ...] = (), horizon: int = 1, latency_s: float = 0.0):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.horizon = horizon
        self.latency_s = latency_s

    def start_episode(self, spec) -> None:
        pass

    def act(self, observations):
        if self.latency_s:
            time.sleep(self.latency_s)
        chunk = np.tile(DUMMY_ACTION, (self.horizon, 1))
        return [ActionChunk(chunk.copy()) for _ in observations]


class RandomPolicy:
    """Uniform actions in [-scale, scale] (gripper in {-1, 1}), seeded per episode."""

    def __init__(self, cameras: list[str] | tuple[str, ...] = (), horizon: int = 1, scale: float = 0.5):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.horizon = horizon
        self.scale = scale
        self._rngs: dict[str, np.random.Generator] = {}

    def start_episode(self, spec) -> None:
        self._rngs[spec.key] = np.random.default_rng(spec.seed)

    def act(self, observations):
        out = []
        for obs in observations:
            rng = self._rngs[obs.episode]
            chunk = rng.uniform(-self.scale, self.scale, size=(self.horizon, 7))
            chunk[:, 6] = np.where(rng.random(self.horizon) < 0.5, -1.0, 1.0)
            out.append(ActionChunk(chunk))
        return out
