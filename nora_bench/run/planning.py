"""Planning a run, pure: which episodes (specs and seeds), in what order, which one a worker takes
next, and whether an errored attempt is retried. No Ray, no simulator: the scheduler executes
what this module decides, in process or on Ray workers, by the same rules.

To add an episode order, write a function `specs, seed -> keys` beside `plan_order` and choose it
in `ordered` (the order is recorded in order.json, so a resume keeps it).
"""

from __future__ import annotations

import zlib
from dataclasses import replace

from nora_bench import UserError
from nora_bench.config import RunConfig
from nora_bench.envs import env_class
from nora_bench.episode import ERROR, EpisodeOutcome, EpisodeSpec
from nora_bench.policies import preset_requirements
from nora_bench.run.rundir import RunDir


def episode_seed(run_seed: int, key: str) -> int:
    """A per-episode seed from the run seed and the episode key: independent of worker and order."""
    return (run_seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def expand(config: RunConfig) -> list[EpisodeSpec]:
    """(task, trial) episode specs of a run, ordered by task then trial."""
    suite = config.suite_spec
    # What the policy needs is the one source of what the env renders (besides the video).
    needs = preset_requirements(config.policy)
    env_cls = env_class(suite.env)
    spec_of_env = env_cls.action_spec
    cameras = tuple(spec_of_env.resolve_camera(c) or c for c in needs.cameras)
    video_cameras: tuple[str, ...] = ()
    if config.video:
        video_cameras = ("agentview", "wrist") if config.video_wrist else ("agentview",)
    specs = []
    for task in config.tasks:
        for trial in config.trials:
            spec = EpisodeSpec(
                suite=suite.name, env=suite.env, task_id=task, trial=trial,
                init_state=trial, seed=0, max_steps=config.max_steps, step_unit=config.step_unit,
                num_steps_wait=config.num_steps_wait, chunk_exec=config.chunk_exec,
                camera_size=suite.camera_size, cameras=cameras,
                state=needs.state, video_cameras=video_cameras,
                video_frames=config.video_frames, env_options=_env_options(suite, task, env_cls.episode_options(config)),
                success_check=config.success_check)
            specs.append(replace(spec, seed=episode_seed(config.seed, spec.key)))
    return specs


# -- order ------------------------------------------------------------------------------------------
ORDER_RULE = "stratified by task: round r runs the r-th init state of each task's seeded random permutation"


def plan_order(specs: list[EpisodeSpec], seed: int) -> list[str]:
    """The episode keys in a seeded random order stratified by task (every task advances at the same
    pace), so that any prefix of a run is a fair sample of it (nora_bench.sequential)."""
    from nora_bench.sequential import stratified_order

    by_task: dict = {}
    for spec in specs:
        by_task.setdefault((spec.suite, spec.task_id), []).append(spec.key)
    return stratified_order(by_task, seed)


def ordered(specs: list[EpisodeSpec], run_dir: RunDir, seed: int, resumed: bool,
            baseline_order: list[str] | None = None) -> list[EpisodeSpec]:
    """The run's specs in its recorded order. A new run (or one with nothing recorded yet) fixes its
    order now and records it; a run recorded before orders existed keeps task-then-trial order.
    `baseline_order`: the order of a paired baseline run (--versus), taken as is."""
    by_key = {s.key: s for s in specs}
    recorded = run_dir.read_json(RunDir.ORDER)
    if recorded is not None:
        keys = recorded["keys"]
    elif resumed and run_dir.records():
        return specs
    else:
        keys = baseline_order if baseline_order is not None else plan_order(specs, seed)
        run_dir.write_json(RunDir.ORDER, {"rule": ORDER_RULE if baseline_order is None else "the baseline's order",
                                          "seed": seed, "keys": keys})
    missing = set(by_key) - set(keys)
    if missing and baseline_order is None:
        raise UserError(f"{run_dir.path}/{RunDir.ORDER} lacks {len(missing)} of the run's episodes: "
                        "the folder was changed by hand; use a new --out folder")
    return [by_key[k] for k in keys if k in by_key]


def _env_options(suite, task: int, per_episode: dict) -> tuple:
    """The suite's env options, plus its task_list entry for the task (if it has a task list) and the
    env kind's per-episode settings."""
    options = {**suite.env_options, **per_episode}
    if suite.task_list:
        options["task"] = suite.task_list[task]
    return tuple(sorted(options.items()))


# -- execution rules (affinity, retry) ---------------------------------------------------------------
def task_of(spec: EpisodeSpec) -> tuple:
    return (spec.suite, spec.task_id)


def pick_episode(queue: list[EpisodeSpec], worker_task: tuple | None, busy: set[tuple],
                 window: int | None = None) -> int:
    """Which pending episode (index into `queue`) a free worker takes: the task whose env it already
    built (no rebuild), then a task no other worker is on, then the first; only the first `window`
    episodes are looked at (None: all)."""
    rules = (lambda s: task_of(s) == worker_task, lambda s: task_of(s) not in busy, lambda s: True)
    for rule in rules:
        for j, spec in enumerate(queue[:window]):
            if rule(spec):
                return j
    raise ValueError("pick_episode() called on an empty queue")


def retries(errors: list[str], attempts: int, outcome: EpisodeOutcome, max_attempts: int) -> bool:
    """Note an errored attempt (its error appended to `errors`); True if the episode gets another one.
    Only `error` outcomes (the env or the machinery failed, not the policy) are retried."""
    if outcome.termination != ERROR:
        return False
    errors.append(outcome.error)
    return attempts < max_attempts


__all__ = ["ORDER_RULE", "episode_seed", "expand", "ordered", "pick_episode", "plan_order", "retries", "task_of"]
