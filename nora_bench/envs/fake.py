"""The `fake` env kind: no simulator, a chosen cost per step, fixed-size images.

It drives the harness (scheduler, Ray calls, batching policy actor, record writer) at GPU-node
rates on any machine, and gives the planner (bench/plan.py) runs whose step cost is known.
Options (the suite's `env_options`):

- `step_ms`: wall time per env step (slept, not spun: it models a simulator elsewhere, not CPU here);
- `step_dist`: `fixed` (every step `step_ms`) or `exponential` (mean `step_ms`, seeded per episode);
- `reset_ms`: wall time of a reset;
- `success_after`: the episode succeeds at this env step (0: never);
- `success_p`: else, each step succeeds with this probability (seeded per episode).

Images are `camera_size` square uint8 arrays, the same bytes every step (built once): what travels
to a policy costs what a real frame of that size costs to move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from nora_bench import UserError
from nora_bench.envs.base import Env
from nora_bench.types import ActionSpec, Observation, StepResult

STEP_DISTS = ("fixed", "exponential")


@dataclass(frozen=True)
class FakeOptions:
    step_ms: float = 0.0
    step_dist: str = "fixed"
    reset_ms: float = 0.0
    success_after: int = 0
    success_p: float = 0.0

    @classmethod
    def from_items(cls, items: Any) -> "FakeOptions":
        given = {k: v for k, v in dict(items).items() if k != "task"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UserError(f"fake env: unknown env_options {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
        opts = cls(**given)
        if opts.step_dist not in STEP_DISTS:
            raise UserError(f"fake env: step_dist {opts.step_dist!r}: use one of {', '.join(STEP_DISTS)}")
        if opts.step_ms < 0 or opts.reset_ms < 0 or opts.success_after < 0 or not 0 <= opts.success_p <= 1:
            raise UserError("fake env: step_ms, reset_ms, success_after must be >= 0 and success_p in [0, 1]")
        return opts


_IMAGES: dict[int, np.ndarray] = {}


def _image(size: int) -> np.ndarray:
    """One fixed frame per size (random bytes: it compresses like a real frame, not like zeros)."""
    if size not in _IMAGES:
        _IMAGES[size] = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _IMAGES[size]


class FakeEnv(Env):
    kind: ClassVar[str] = "fake"
    action_spec: ClassVar[ActionSpec] = ActionSpec()  # LIBERO's: 7-D, agentview + wrist
    # It mostly sleeps: many workers share a core (64 fit on 2 cores), each a Python process.
    worker_cpus: ClassVar[float] = 0.02
    worker_memory: ClassVar[int] = 100 * 2**20

    def __init__(self):
        self.info: dict[str, Any] = {}
        self._steps = 0

    @classmethod
    def check_run(cls, config) -> None:
        FakeOptions.from_items(config.suite_spec.env_options)

    def reset(self, spec) -> Observation:
        self.opts = FakeOptions.from_items(spec.env_options)
        self._rng = np.random.default_rng(spec.seed)
        self._spec, self._steps = spec, 0
        self.info = {"task": f"fake_task{spec.task_id}", "instruction": f"fake task {spec.task_id}"}
        self._sleep(self.opts.reset_ms)
        return self._observe(True)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        o = self.opts
        self._sleep(self._rng.exponential(o.step_ms) if o.step_dist == "exponential" else o.step_ms)
        self._steps += 1
        success = (o.success_after > 0 and self._steps >= o.success_after) or (
            o.success_p > 0 and self._rng.random() < o.success_p)
        return StepResult(self._observe(render), bool(success))

    def frame(self, observation: Observation) -> np.ndarray | None:
        return observation.images.get("agentview")

    def episode_info(self) -> dict[str, Any]:
        return {"fake_steps": self._steps}

    def _observe(self, render: bool) -> Observation:
        spec = self._spec
        cams = spec.render_cameras if render else ()
        images = {c: _image(spec.camera_size) for c in cams}
        return Observation(self.info["instruction"], spec.key, images,
                           {"step": self._steps} if spec.state else None)

    @staticmethod
    def _sleep(ms: float) -> None:
        if ms > 0:
            time.sleep(ms / 1000)
