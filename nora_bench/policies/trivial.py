"""Plumbing policies: `zero` (the env's dummy action) and `random` (seeded uniform actions)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nora_bench import UserError
from nora_bench.policies.config import PolicyConfig
from nora_bench.types import ActionChunk, ActionSpec, EpisodeInfo


@dataclass(frozen=True, kw_only=True)
class ZeroConfig(PolicyConfig):
    cameras: tuple[str, ...] = ()  # what the env renders (nothing is read: for timing renders)
    horizon: int = 1  # actions per chunk
    latency_s: float = 0.0  # a fixed cost per act() call

    def check(self) -> None:
        if self.horizon < 1 or self.latency_s < 0:
            raise UserError(f"horizon must be >= 1 and latency_s >= 0 (got {self.horizon}, {self.latency_s})")


@dataclass(frozen=True, kw_only=True)
class RandomConfig(PolicyConfig):
    cameras: tuple[str, ...] = ()
    horizon: int = 1
    scale: float = 0.5  # actions uniform in [-scale, scale]

    def check(self) -> None:
        if self.horizon < 1 or self.scale < 0:
            raise UserError(f"horizon must be >= 1 and scale >= 0 (got {self.horizon}, {self.scale})")


class ZeroPolicy:
    """Always the env's dummy action: no motion, gripper open (in the env's convention).

    `latency_s` adds a fixed cost per `act` call, whatever the batch size: a stand-in for a
    model's forward pass in benchmarks of batching.
    """

    config_class = ZeroConfig

    def __init__(self, config: ZeroConfig, action_spec: ActionSpec):
        self.requirements = config.requirements()
        self.dummy_action = action_spec.dummy_action
        self.horizon, self.latency_s = config.horizon, config.latency_s

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

    config_class = RandomConfig

    def __init__(self, config: RandomConfig, action_spec: ActionSpec):
        self.requirements = config.requirements()
        self.dim, self.gripper = action_spec.dim, action_spec.gripper
        self.horizon, self.scale = config.horizon, config.scale
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
