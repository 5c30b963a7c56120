"""The one environment interface every env kind (LIBERO simulator, real WidowX) implements.

Capabilities are class data and classmethods, so the driver reads them from the registered class
(`nora_bench.envs.env_class`) without building an env.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from nora_bench.types import ActionSpec, Observation, StepResult

# Frames per second of videos of envs without a control rate of their own (LIBERO's 20 Hz control).
DEFAULT_VIDEO_FPS = 20


class Env:
    """One episode at a time. `reset(spec)` places the scene for an episode (spec: an
    `episode.EpisodeSpec`); `step` applies one action.

    `render` says whether the step's observation needs camera images (the protocol skips
    rendering for frames nobody will look at).
    """

    kind: ClassVar[str] = ""
    action_spec: ClassVar[ActionSpec] = ActionSpec()
    # Talks to an operator on this terminal (real robot): its runs execute in the driver process.
    operator_driven: ClassVar[bool] = False
    # What one env worker reserves on Ray: CPU slots and bytes (about 1.5 GB per LIBERO env,
    # REFERENCE.md section 5), so that Ray places no more workers than the machine holds.
    worker_cpus: ClassVar[float] = 1.0
    worker_memory: ClassVar[int] = int(1.5 * 2**30)
    # What the env sets after reset: {"task": ..., "instruction": ...}
    info: dict[str, Any]

    # -- capabilities, read without building an env -----------------------------------------------
    @classmethod
    def preflight(cls, options: dict[str, Any]) -> None:
        """Checks the env can start before a run begins (e.g. the robot answers and speaks our protocol)."""

    @classmethod
    def check_run(cls, config) -> None:
        """What can be checked about a whole run (a `config.RunConfig`) before its first episode
        (benchmark, tasks, init states, distractors): a UserError naming the mistake."""

    @classmethod
    def episode_options(cls, config) -> dict[str, Any]:
        """The run's settings (a `config.RunConfig`) this env kind reads per episode, carried in
        `EpisodeSpec.env_options` beside the suite's own env_options (none by default)."""
        return {}

    @classmethod
    def video_fps(cls, options: dict[str, Any]) -> float:
        """Frames per second of an episode's video, so that it plays in real time."""
        return DEFAULT_VIDEO_FPS

    @classmethod
    def versions(cls) -> tuple[str, ...]:
        """Packages whose versions decide this env's results (recorded with every run)."""
        return ()

    @property
    def dummy_action(self) -> np.ndarray:
        return self.action_spec.dummy_action

    # -- one episode ----------------------------------------------------------------------------------
    def reset(self, spec) -> Observation:
        raise NotImplementedError

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        raise NotImplementedError

    def frame(self, observation: Observation) -> np.ndarray | None:
        """The video frame for an observation (None if the env records no video)."""
        return None

    def episode_info(self) -> dict[str, Any]:
        """Env-specific facts to store in the episode record (e.g. distractor poses)."""
        return {}

    def judge(self, termination: str) -> bool | None:
        """Called once the episode has ended: an operator-judged env returns the outcome;
        None leaves the simulator's own success check standing."""
        return None

    def close(self) -> None:
        pass


__all__ = ["Env", "Observation", "StepResult", "ActionSpec", "DEFAULT_VIDEO_FPS"]
