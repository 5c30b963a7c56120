"""The one policy interface: a batch of observations in, one action chunk per observation out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from nora_bench.envs.base import Observation
    from nora_bench.episode import EpisodeSpec


@dataclass(frozen=True)
class Requirements:
    """What a policy needs from the env; the env renders nothing else."""

    cameras: tuple[str, ...] = ("agentview",)
    state: bool = False  # privileged simulator state (scripted expert)


@dataclass
class ActionChunk:
    """A policy's answer to one observation.

    `actions` is (T, action_dim). `failures` lists outputs that could not be used as produced
    and were replaced by a fallback (e.g. a FAST+ decode failure): they are counted in the
    episode record. `stop` ends the episode with that reason instead of acting.
    """

    actions: np.ndarray
    failures: list[str] = field(default_factory=list)
    stop: str | None = None


class Policy(Protocol):
    requirements: Requirements

    def start_episode(self, spec: "EpisodeSpec") -> None:
        """Called before an episode's first query (per-episode seeds, state)."""
        ...

    def act(self, observations: list["Observation"]) -> list[ActionChunk]: ...
