"""The one environment interface every env (LIBERO simulator, real WidowX) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from nora_bench.episode import EpisodeSpec


@dataclass
class Observation:
    """What a policy sees at a query: camera images (HxWx3 uint8), the instruction, optional state."""

    instruction: str
    episode: str = ""  # the episode's key, so a policy serving many episodes can keep state per episode
    images: dict[str, np.ndarray] = field(default_factory=dict)
    # Privileged simulator state, only filled when the policy declares it needs it.
    state: dict[str, Any] | None = None


@dataclass
class StepResult:
    observation: Observation
    success: bool
    # Set when the env itself cannot go on (lost connection, terminated sim); ends the episode.
    failure: str | None = None
    # Set when the env ended the episode normally (the operator's stop key on the real robot).
    stop: str | None = None


class Env(Protocol):
    """One episode at a time. `reset` places the scene for an episode; `step` applies one action.

    `render` says whether the step's observation needs camera images (the protocol skips
    rendering for frames nobody will look at).

    An operator-judged env (the real WidowX) also has `judge(termination) -> bool`: called when
    the episode has ended, its answer is the episode's success.
    """

    dummy_action: np.ndarray

    def reset(self, spec: "EpisodeSpec") -> Observation: ...

    def step(self, action: np.ndarray, render: bool = True) -> StepResult: ...

    def frame(self, observation: Observation) -> np.ndarray | None:
        """The video frame for an observation (None if the env records no video)."""
        ...

    def episode_info(self) -> dict[str, Any]:
        """Env-specific facts to store in the episode record (e.g. distractor poses)."""
        ...

    def close(self) -> None: ...
