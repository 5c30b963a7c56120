"""Environments: one interface (`base.Env`); env kinds registered by name in `ENV_KINDS`.

An env kind declares its capabilities as class data (`action_spec`, `operator_driven`) and
classmethods (`preflight`, `video_fps`, `versions`): the driver reads them from `env_class(kind)`
without building an env, and nothing here branches on a kind's name.
"""

from __future__ import annotations

import importlib
import os

from nora_bench import UserError
from nora_bench.envs.base import Env
from nora_bench.types import ActionSpec, Observation, StepResult

# kind -> "module:Class"; imported lazily (a simulator's module is only loaded where it runs).
ENV_KINDS: dict[str, str] = {
    "libero": "nora_bench.envs.libero:LiberoEnv",
    "widowx": "nora_bench.envs.widowx:WidowXEnv",
    "fake": "nora_bench.envs.fake:FakeEnv",  # no simulator: a chosen step cost (harness benchmarks, planning)
}


def configure_rendering() -> None:
    """Headless offscreen rendering through EGL (Mesa llvmpipe when there is no GPU).

    Must run before mujoco/robosuite are imported; respects a user's own MUJOCO_GL choice.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"] if os.environ["MUJOCO_GL"] != "glfw" else "")
    # Mesa's llvmpipe and Triton (which torch/transformers import, sometimes lazily) each carry
    # their own LLVM: Triton loaded after a GL context exists segfaults the process. Loaded
    # first, both work; this keeps an env and a model safe in one process.
    import sys

    if "mujoco" in sys.modules and "triton" not in sys.modules:
        # Too late: with MuJoCo's GL libraries loaded, importing Triton now would itself crash.
        # (Import nora_bench.envs before mujoco to have both in one process.)
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


def env_class(kind: str) -> type[Env]:
    """The registered class of an env kind (its module is imported, the env is not built)."""
    target = ENV_KINDS.get(kind)
    if target is None:
        raise UserError(f"unknown env {kind!r}; known: {', '.join(sorted(ENV_KINDS))}")
    module, name = target.split(":", 1)
    return getattr(importlib.import_module(module), name)


def make_env(kind: str) -> Env:
    return env_class(kind)()


def action_spec(kind: str) -> ActionSpec:
    return env_class(kind).action_spec


def check_run(config) -> None:
    """What the env kind checks about a whole run before its first episode (`Env.check_run`)."""
    env_class(config.suite["env"]).check_run(config)


__all__ = ["ENV_KINDS", "Env", "ActionSpec", "Observation", "StepResult", "env_class", "make_env", "action_spec",
           "check_run", "configure_rendering"]
