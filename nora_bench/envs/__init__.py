"""Environments: one interface (`base.Env`); `make_env` builds the one an episode spec names."""

from __future__ import annotations

import os

from nora_bench import UserError
from nora_bench.envs.base import Env, Observation, StepResult


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


def make_env(kind: str) -> Env:
    if kind == "libero":
        configure_rendering()
        from nora_bench.envs.libero import LiberoEnv

        return LiberoEnv()
    if kind == "widowx":
        from nora_bench.envs.widowx import WidowXEnv

        return WidowXEnv()
    raise UserError(f"unknown env {kind!r}; known: libero, widowx")


# Envs that talk to an operator on this terminal: their runs execute in the driver process.
OPERATOR_ENVS = ("widowx",)


def operator_driven(kind: str) -> bool:
    return kind in OPERATOR_ENVS


def video_fps(spec) -> float:
    """Frames per second of an episode's video, so that it plays in real time."""
    if spec.env == "widowx":
        return float(dict(spec.env_options).get("control_hz", 5.0))
    from nora_bench.video import FPS

    return FPS


def preflight(kind: str, env_options: dict) -> None:
    """Checks an env can start before a run begins (the robot answers and speaks our protocol)."""
    if kind == "widowx":
        from nora_bench.envs.widowx import preflight as widowx_preflight

        widowx_preflight(env_options)


# kind -> "module:function(config)": what an env kind checks about a whole run before its first
# episode (benchmark, tasks, init states, distractors), so that no mistake shows only per episode.
RUN_CHECKS: dict[str, str] = {"libero": "nora_bench.envs.libero:check_run"}


def check_run(config) -> None:
    target = RUN_CHECKS.get(config.suite["env"])
    if target is None:
        return
    import importlib

    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(config)


__all__ = ["check_run", "Env", "Observation", "StepResult", "make_env", "configure_rendering", "operator_driven", "preflight",
           "video_fps"]
