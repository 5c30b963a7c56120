"""The episode protocol, shared by every env and policy.

reset -> policy.start_episode(info) -> settle (dummy action, not counted) -> loop { observe ->
query policy when the chunk rule asks -> execute one action -> stop on success / step limit /
policy stop / env failure } -> env.judge -> policy.end_episode (always) -> `EpisodeOutcome`, which the
scheduler turns into the episode's record (`EpisodeResult.from_outcome`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from nora_bench.chunking import ChunkRule
from nora_bench.types import ActionChunk, EpisodeInfo, InfrastructureError, Observation  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # annotations only: the protocol runs any object with these methods
    from nora_bench.envs.base import Env
    from nora_bench.policies.base import Policy

# Termination reasons (the `termination` field of a record).
SUCCESS = "success"
STEP_LIMIT = "step_limit"
POLICY_STOP = "policy_stop"  # the policy ended the episode (e.g. decode failure with fallback 'fail')
POLICY_ERROR = "policy_error"  # unusable policy output (wrong shape, NaN) or a policy exception
ENV_FAILURE = "env_failure"  # the env could not go on (lost robot connection, ...)
ERROR = "error"  # an exception in the env or the worker; retried, then recorded
OPERATOR_STOP = "operator_stop"  # the env's operator stopped the episode (real robot)
# When the env's success counts: at any env step (OpenVLA's script, the default) or only at the last
# step of each executed chunk (NORA's published LIBERO script checks `done` after the chunk).
SUCCESS_CHECKS = ("any_step", "chunk_end")
TERMINATIONS = (SUCCESS, STEP_LIMIT, POLICY_STOP, POLICY_ERROR, ENV_FAILURE, ERROR, OPERATOR_STOP)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: everything that decides its outcome."""

    suite: str
    task_id: int
    trial: int
    init_state: int
    seed: int
    max_steps: int
    step_unit: str = "env_steps"
    num_steps_wait: int = 10
    chunk_exec: str = "all"
    env: str = "libero"
    camera_size: int = 256
    cameras: tuple[str, ...] = ("agentview",)  # what the policy needs
    state: bool = False  # privileged state in observations
    video_cameras: tuple[str, ...] = ()  # what the video shows (empty: no video)
    video_frames: str = "steps"
    # What only this env kind reads (sorted items): the suite's env_options, its task_list entry, and the
    # run settings the kind takes per episode (`Env.episode_options`, e.g. envs/libero.py's LiberoOptions).
    env_options: tuple[tuple[str, Any], ...] = ()
    success_check: str = "any_step"  # SUCCESS_CHECKS

    @property
    def key(self) -> str:
        """Unique within a run; the resume and de-duplication key."""
        return f"{self.suite}/task{self.task_id:03d}/trial{self.trial:02d}"

    @property
    def render_cameras(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.cameras + self.video_cameras))

    def episode_info(self, instruction: str = "") -> EpisodeInfo:
        """What the policy may know about this episode."""
        return EpisodeInfo(key=self.key, suite=self.suite, task_id=self.task_id, trial=self.trial,
                           init_state=self.init_state, seed=self.seed, instruction=instruction,
                           chunk_exec=self.chunk_exec)


@dataclass
class EpisodeOutcome:
    """How one attempt at an episode ended: what the protocol and the env worker know about it.
    The scheduler adds the run's identity fields to make the record (`EpisodeResult.from_outcome`)."""

    success: bool | None  # None when the attempt errored before an outcome existed
    termination: str  # one of TERMINATIONS
    env_steps: int = 0
    queries: int = 0
    decode_failures: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    policy_info: dict[str, Any] = field(default_factory=dict)  # ActionChunk.info, aggregated over queries
    # Set by the env worker after the episode: the env's task and instruction, its record facts, where it ran
    task: str = ""
    instruction: str = ""
    env_info: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    node: str = ""

    def __post_init__(self) -> None:
        if self.termination not in TERMINATIONS:
            raise ValueError(f"unknown termination {self.termination!r} (one of {', '.join(TERMINATIONS)})")

    @classmethod
    def errored(cls, error: str, traceback: str | None = None) -> "EpisodeOutcome":
        """An attempt the env or the machinery could not finish (retried, then recorded)."""
        return cls(success=None, termination=ERROR, error=error, traceback=traceback)


@dataclass
class EpisodeResult:
    """The record of one finished episode (one JSON line in the run folder)."""

    key: str
    suite: str
    task_id: int
    task: str
    instruction: str
    trial: int
    init_state: int
    seed: int
    success: bool | None  # None when the episode errored before an outcome existed
    termination: str
    env_steps: int = 0
    queries: int = 0
    max_steps: int = 0
    step_unit: str = "env_steps"
    chunk_exec: str = "all"
    success_check: str = "any_step"  # when success counted (SUCCESS_CHECKS)
    distractors: int = 0
    # Robustness grouping (SuiteSpec.perturbation): "base", a suite family (lan, swap, ...), "distractors"
    family: str = "base"
    level: str = ""
    base_suite: str = ""
    decode_failures: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    attempts: int = 1
    attempt_errors: list[str] = field(default_factory=list)
    policy: str = ""
    checkpoint: str | None = None
    video: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    env_info: dict[str, Any] = field(default_factory=dict)
    policy_info: dict[str, Any] = field(default_factory=dict)  # ActionChunk.info, aggregated over queries
    worker: str = ""
    node: str = ""  # Ray node id of the worker
    finished_at: str = ""
    harness_version: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_outcome(cls, spec: EpisodeSpec, outcome: EpisodeOutcome, *, attempts: int, attempt_errors: list[str],
                     perturbation: dict[str, str], **run_fields: Any) -> "EpisodeResult":
        """The record of an episode: the spec's identity and limits, the outcome, the run's fields
        (distractors, policy, checkpoint, video, finished_at, harness_version, versions)."""
        return cls(
            key=spec.key, suite=spec.suite, task_id=spec.task_id, task=outcome.task,
            instruction=outcome.instruction, trial=spec.trial, init_state=spec.init_state,
            seed=spec.seed, success=outcome.success, termination=outcome.termination,
            env_steps=outcome.env_steps, queries=outcome.queries,
            max_steps=spec.max_steps, step_unit=spec.step_unit, chunk_exec=spec.chunk_exec,
            success_check=spec.success_check, **perturbation,
            decode_failures=outcome.decode_failures, failure_reasons=outcome.failure_reasons,
            error=outcome.error, traceback=outcome.traceback, attempts=attempts, attempt_errors=attempt_errors,
            timings=outcome.timings, env_info=outcome.env_info, policy_info=outcome.policy_info,
            worker=outcome.worker, node=outcome.node, **run_fields)


def check_chunk(chunk: ActionChunk, action_dim: int) -> str | None:
    """Why a policy's chunk cannot be executed, or None if it can."""
    a = np.asarray(chunk.actions)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != action_dim:
        return f"action chunk has shape {a.shape}, expected (T>=1, {action_dim})"
    if not np.issubdtype(a.dtype, np.number):
        return f"action chunk has dtype {a.dtype}"
    if not np.all(np.isfinite(a)):
        return "action chunk holds NaN or infinite values"
    return None


def aggregate_policy_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """One episode's `ActionChunk.info` dicts -> a record field: per key, numbers become
    {n, mean, min, max}, strings and booleans a count per value, anything else its last value."""
    values: dict[str, list] = {}
    for info in infos:
        for k, v in info.items():
            values.setdefault(k, []).append(v)
    out: dict[str, Any] = {}
    for k, vs in values.items():
        if all(isinstance(v, Real) and not isinstance(v, bool) for v in vs):
            a = np.asarray(vs, dtype=np.float64)
            out[k] = {"n": len(vs), "mean": round(float(a.mean()), 6), "min": float(a.min()), "max": float(a.max())}
        elif all(isinstance(v, (str, bool)) for v in vs):
            counts: dict[str, int] = {}
            for v in vs:
                counts[str(v)] = counts.get(str(v), 0) + 1
            out[k] = counts
        else:
            out[k] = vs[-1]
    return out


class ProtocolRun:
    """Runs one episode of `env` with `policy` (the Policy contract; one observation per `act`)."""

    def __init__(self, env: "Env", spec: EpisodeSpec, policy: "Policy",
                 frame_sink: Callable[[np.ndarray], None] | None = None):
        self.env, self.spec, self.policy, self.frame_sink = env, spec, policy, frame_sink

    def run(self) -> EpisodeOutcome:
        """How the episode ended (the env worker adds the env's facts, the scheduler the identity fields)."""
        spec, env = self.spec, self.env
        t_start = time.perf_counter()
        timings = {"reset_s": 0.0, "settle_s": 0.0, "policy_s": 0.0, "env_s": 0.0}
        # Counters filled as the episode goes; termination and success are decided at its end.
        out = EpisodeOutcome(success=False, termination=STEP_LIMIT)

        t = time.perf_counter()
        obs = env.reset(spec)
        timings["reset_s"] = time.perf_counter() - t
        # After the reset the instruction is known; the policy frees the episode's state whatever happens.
        info = spec.episode_info(getattr(env, "info", {}).get("instruction", obs.instruction))
        t = time.perf_counter()
        self.policy.start_episode(info)
        timings["policy_s"] += time.perf_counter() - t
        try:
            self._loop(obs, out, timings)
        finally:
            self.policy.end_episode(spec.key)
        timings["wall_s"] = time.perf_counter() - t_start
        out.timings = {k: round(v, 4) for k, v in timings.items()}
        return out

    def _loop(self, obs: Observation, out: EpisodeOutcome, timings: dict[str, float]) -> None:
        spec, env = self.spec, self.env
        every_step_video = self.frame_sink is not None and spec.video_frames == "steps"
        t = time.perf_counter()
        for i in range(spec.num_steps_wait):
            # Only the last settle frame is looked at: render nothing before it.
            r = env.step(env.dummy_action, render=i == spec.num_steps_wait - 1)
            obs = r.observation
        timings["settle_s"] = time.perf_counter() - t

        executor = ChunkRule.parse(spec.chunk_exec).executor()
        action_dim = len(env.dummy_action)
        termination, success = STEP_LIMIT, False
        infos: list[dict[str, Any]] = []
        if self.frame_sink is not None:
            self._frame(obs)
        while True:
            if spec.step_unit == "env_steps" and out.env_steps >= spec.max_steps:
                break
            if executor.needs_query():
                if spec.step_unit == "queries" and out.queries >= spec.max_steps:
                    break
                t = time.perf_counter()
                try:
                    chunk = self.policy.act([obs])[0]
                except InfrastructureError:
                    raise
                except Exception as e:  # a policy exception ends this episode, recorded, not the run
                    out.error = f"policy raised {type(e).__name__}: {e}"
                    termination = POLICY_ERROR
                    break
                finally:
                    timings["policy_s"] += time.perf_counter() - t
                out.queries += 1
                out.decode_failures += len(chunk.failures)
                out.failure_reasons += chunk.failures
                if chunk.info:
                    infos.append(chunk.info)
                if chunk.stop:
                    out.error = chunk.stop
                    termination = POLICY_STOP
                    break
                problem = check_chunk(chunk, action_dim)
                if problem:
                    out.error = problem
                    termination = POLICY_ERROR
                    break
                executor.push(np.asarray(chunk.actions, dtype=np.float64))
            action = executor.pop()
            # Render only what someone will look at: the policy's next observation (unless the
            # step limit ends the episode first) or the video.
            next_unit = out.env_steps + 1 if spec.step_unit == "env_steps" else out.queries
            render = (executor.needs_query() and next_unit < spec.max_steps) or every_step_video
            t = time.perf_counter()
            r = env.step(action, render=render)
            timings["env_s"] += time.perf_counter() - t
            out.env_steps += 1
            obs = r.observation
            if self.frame_sink is not None and render:
                self._frame(obs)
            if r.success and (spec.success_check == "any_step" or executor.needs_query()):
                termination, success = SUCCESS, True
                break
            if r.failure:
                termination = ENV_FAILURE
                out.error = r.failure
                break
            if r.stop:
                termination = OPERATOR_STOP
                break
        # An operator-judged env (real robot) gives the outcome; a failure keeps the reason the
        # episode ended. None: the simulator's own success check stands.
        t = time.perf_counter()
        verdict = env.judge(termination)
        if verdict is not None:
            timings["judge_s"] = time.perf_counter() - t
            success = bool(verdict)
            if success:
                termination = SUCCESS
        if infos:
            out.policy_info = aggregate_policy_info(infos)
        out.success, out.termination = success, termination

    def _frame(self, obs: Observation) -> None:
        frame = self.env.frame(obs)
        if frame is not None:
            self.frame_sink(frame)
