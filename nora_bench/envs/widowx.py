"""The real WidowX env: the episode protocol on a physical robot, with an operator at this terminal.

An episode: the operator sets up the scene and presses Enter -> the arm resets (server `reset`,
then a blocking move to the start pose) -> the loop runs at the configured rate (5 Hz, NORA's
WidowX script), each step a non-blocking `step_action` and a fresh observation; Enter during
the loop stops the episode -> the operator says how it went, which becomes the episode's
success (partial credit for multi-object tasks goes into env_info). The robot is reached over
the bridge_data_robot wire protocol (`widowx_protocol`); a timeout or lost connection ends the
episode with its reason recorded.

Robot-side errors after a clean handshake: an observation that cannot be used (an image that does
not decode, is truncated or has the wrong shape) makes the harness ask the operator once whether
to ask the robot again; a second one ends the episode as `env_failure` (or, at a reset, the
session). A reply our client refuses to unpickle (it could run code here) ends the session at
once with one line. Neither is ever retried behind the operator's back.
"""

from __future__ import annotations

import dataclasses
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np

from nora_bench import UserError
from nora_bench.envs.base import Env
from nora_bench.envs.widowx_protocol import (
    DEFAULT_PORT,
    ForbiddenPickle,
    ProtocolError,
    RobotObservation,
    RobotTimeout,
    WidowXClient,
    WidowXStatus,
)
from nora_bench.types import BRIDGE_GRIPPER, ActionSpec, Observation, StepResult

# 7-D delta end-effector actions in the Bridge convention (gripper 1.0 open, 0.0 closed). The
# bridge server sends one third-person camera; observations call it `agentview` (LIBERO's name
# for the same role), and its wire name `full_image` is an alias.
WIDOWX_ACTION_SPEC = ActionSpec(
    dim=7, gripper=BRIDGE_GRIPPER, cameras=("agentview",),
    camera_aliases=(("full_image", "agentview"), ("primary", "agentview"), ("image", "agentview")))
WIDOWX_DUMMY_ACTION = WIDOWX_ACTION_SPEC.dummy_action  # no motion, gripper open
# bridge_data_robot's evaluation settings (its example eval script): camera, workspace, step time.
DEFAULT_ENV_PARAMS = {
    "camera_topics": [{"name": "/blue/image_raw"}],
    "override_workspace_boundaries": [[0.1, -0.15, -0.01, -1.57, 0], [0.45, 0.25, 0.25, 1.57, 0]],
    "move_duration": 0.2,
}


class OperatorAbort(KeyboardInterrupt):
    """The operator ended the session (q, or end of input). Like Ctrl-C it is not an episode error:
    the unfinished episode is not recorded, and re-running the command resumes at it."""


class RobotRefused(KeyboardInterrupt):
    """The robot cannot be used (it sent a reply our client refused, or unusable observations even
    after the operator's one retry): the session ends like Ctrl-C, with the reason as its one line;
    the unfinished episode is not recorded, and re-running the command resumes at it."""


@dataclass
class WidowXOptions:
    """The suite's `env_options` for a WidowX suite (plus --robot-host/--robot-port)."""

    robot_host: str | None = None
    robot_port: int = DEFAULT_PORT
    control_hz: float = 5.0
    timeout_s: float = 5.0  # per request during an episode: longer means the connection is lost
    init_timeout_s: float = 60.0  # the robot stack's first init takes about 10 s
    start_pose: list[float] = field(default_factory=lambda: [0.3, 0.0, 0.15, 0.0, 0.0, 0.0])
    move_duration: float = 1.0
    blocking: bool = False  # step_action blocking (the reference evaluation uses non-blocking)
    env_params: dict = field(default_factory=lambda: dict(DEFAULT_ENV_PARAMS))
    task: dict = field(default_factory=dict)  # the suite's task_list entry of this episode

    @classmethod
    def from_items(cls, items: Any) -> "WidowXOptions":
        data = dict(items)
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - names)
        if extra:
            raise UserError(f"unknown WidowX env option(s) {', '.join(extra)}; known: {', '.join(sorted(names))}")
        opts = cls(**data)
        if not opts.robot_host:
            raise UserError("no robot to talk to: pass --robot-host HOST (the computer running the bridge_data_robot "
                            "WidowX server; `nora-bench widowx-sim-server` runs a stand-in on 127.0.0.1)")
        if not opts.control_hz > 0:
            raise UserError(f"control_hz must be > 0, not {opts.control_hz}")
        if len(opts.start_pose) != 6:
            raise UserError("start_pose is [x, y, z, roll, pitch, yaw]")
        return opts


def connect(opts: WidowXOptions) -> WidowXClient:
    """Open a client and check the server's config hash (raises a ProtocolError with the fix)."""
    return WidowXClient(opts.robot_host, opts.robot_port, timeout_s=opts.timeout_s)


def preflight(env_options: dict[str, Any]) -> None:
    """Before an operator session: reach the server and check its config, so a wrong host,
    a server of another config or one that sends forbidden data fails at once with one line."""
    opts = WidowXOptions.from_items({k: v for k, v in env_options.items() if k != "task"})
    connect(opts).close()


# -- the operator --------------------------------------------------------------------------------
class Operator:
    """Prompts on `out`, answers read line by line from the file descriptor of `inp`.

    Reading the descriptor directly (not through Python's buffered stdin) lets `stop_requested`
    poll for an Enter between control steps without swallowing later answers.
    """

    def __init__(self, inp: TextIO | None = None, out: TextIO | None = None):
        self.inp = inp or sys.stdin
        self.out = out or sys.stdout
        self._buf = b""
        self._eof = False

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _fill(self, timeout: float | None) -> None:
        fd = self.inp.fileno()
        if self._eof:
            return
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            chunk = os.read(fd, 4096)
            if chunk:
                self._buf += chunk
            else:
                self._eof = True

    def _line(self) -> str | None:
        if b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            return line.decode(errors="replace").strip()
        return None

    def read_line(self) -> str:
        while True:
            line = self._line()
            if line is not None:
                return line
            if self._eof:
                raise OperatorAbort("the operator's input ended")
            self._fill(None)

    def ask(self, prompt: str, parse: Callable[[str], Any]) -> Any:
        """Ask until `parse` accepts the answer (it raises ValueError with the valid answers)."""
        while True:
            self.say(prompt)
            answer = self.read_line()
            try:
                return parse(answer)
            except ValueError as e:
                self.say(f"  not understood: {answer!r}; {e}")

    def stop_requested(self) -> bool:
        """True if the operator pressed Enter since the last call (never blocks)."""
        self._fill(0)
        return self._line() is not None

    def discard_pending(self) -> None:
        """Forget keys pressed before a prompt (e.g. an Enter after an episode already ended)."""
        self._fill(0)
        self._buf = b""


# -- the env -----------------------------------------------------------------------------------
class UnattendedOperator(Operator):
    """Nobody at the terminal: every prompt takes its default (Enter), no episode is stopped early.
    For dry runs against the stand-in robot (`nora-bench widowx-sim-server`), benchmarks and tests."""

    def __init__(self):
        super().__init__(out=open(os.devnull, "w"))

    def ask(self, prompt, parse):
        return parse("")

    def stop_requested(self) -> bool:
        return False

    def discard_pending(self) -> None:
        pass


class WidowXEnv(Env):
    """The WidowX robot behind a bridge_data_robot server, driven at a fixed control rate."""

    kind = "widowx"
    action_spec = WIDOWX_ACTION_SPEC
    operator_driven = True  # the operator sets up and judges each trial at this terminal

    @classmethod
    def preflight(cls, options: dict[str, Any]) -> None:
        preflight(options)

    @classmethod
    def video_fps(cls, options: dict[str, Any]) -> float:
        return float(dict(options).get("control_hz", 5.0))  # the control rate: videos play in real time

    @classmethod
    def versions(cls) -> tuple[str, ...]:
        return ("pyzmq", "lz4", "opencv-python-headless")  # OpenCV decodes the camera's JPEG

    def __init__(self, operator: Operator | None = None):
        self.operator = operator or Operator()
        self.client: WidowXClient | None = None
        self._client_for: tuple | None = None
        self.opts: WidowXOptions | None = None
        self.info: dict[str, Any] = {}
        self._episode = ""
        self._instruction = ""
        self._cameras: tuple[str, ...] = ()
        self._video_cameras: tuple[str, ...] = ()
        self._last: Observation | None = None
        self._steps = 0
        self._ticks: list[float] = []
        self._next_tick: float | None = None
        self._rtt: dict[str, list[float]] = {"step": [], "obs": []}
        self._ended_by = ""
        self._verdict: dict[str, Any] = {}
        self._want_state = False
        self._config_hash = ""
        self._agentlace_hash = ""
        self._asked_retry = False  # the operator was asked about an unusable observation this episode
        self._off_convention = 0  # actions whose gripper value lies outside [close, open]
        self._encodings: dict[str, int] = {}
        self._decode_s: list[float] = []
        self._wire_bytes: list[int] = []
        self._frame_shape: tuple[int, ...] | None = None

    # -- connection ---------------------------------------------------------------------------
    def _ensure_client(self, opts: WidowXOptions, image_size: int) -> None:
        key = (opts.robot_host, opts.robot_port, image_size, repr(opts.env_params))
        if self.client is not None and self._client_for == key:
            return
        self._close_client()
        self.client = connect(opts)
        self._config_hash = self.client.config_hash
        self._agentlace_hash = self.client.agentlace_config_hash
        status = self.client.init(opts.env_params, image_size, timeout_s=opts.init_timeout_s)
        if status != WidowXStatus.SUCCESS:
            self._close_client()
            raise ProtocolError(f"the robot server could not initialise the robot (status {WidowXStatus.NAMES.get(status, status)}): "
                                "check the robot computer's server log")
        self._client_for = key

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self._client_for = None

    # -- the Env interface --------------------------------------------------------------------
    def reset(self, spec) -> Observation:
        try:
            return self._reset(spec)
        except ForbiddenPickle as e:
            raise RobotRefused(str(e)) from None

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        try:
            return self._step(action, render)
        except ForbiddenPickle as e:
            raise RobotRefused(str(e)) from None

    def _reset(self, spec) -> Observation:
        opts = WidowXOptions.from_items(spec.env_options)
        task = opts.task
        if not task.get("instruction"):
            raise UserError(f"suite {spec.suite} gives task {spec.task_id} no instruction: add a task_list entry")
        # Refuse a camera the robot does not have before anything moves.
        self._cameras = tuple(_camera_key(c) for c in spec.cameras)
        self._video_cameras = tuple(_camera_key(c) for c in spec.video_cameras)
        self.opts = opts
        self._episode = spec.key
        self._instruction = task["instruction"]
        self.info = {"task": task.get("name", f"task{spec.task_id}"), "instruction": task["instruction"]}
        self._verdict, self._ended_by = {}, ""
        self._want_state = spec.state
        self._asked_retry, self._frame_shape = False, None
        self._off_convention = 0
        self._encodings, self._decode_s, self._wire_bytes = {}, [], []

        op = self.operator
        op.discard_pending()
        op.say("")
        op.say(f"=== {spec.suite} task {spec.task_id} ({self.info['task']}), trial {spec.trial + 1} ===")
        op.say(f"instruction: {task['instruction']}")
        if task.get("setup"):
            op.say(f"setup: {task['setup']}")
        op.ask("Set up the scene, then press Enter to start (q + Enter ends the session).", _parse_start)

        while True:
            try:
                raw = self._reset_arm(opts, spec.camera_size)
                break
            except RobotTimeout as e:
                # The robot computer is down or unreachable: the operator can fix it and retry, or
                # end the session (resumable), instead of every remaining trial erroring out.
                self._close_client()
                op.ask(f"{e}\nPress Enter to retry, or q + Enter to end the session.", _parse_start)
            except ForbiddenPickle:
                raise
            except ProtocolError as e:
                # The robot answered but refused (a failed init/reset/move) or sent unusable data:
                # one retry if the operator wants it, then the session ends (no silent re-runs of
                # the scene set-up by the scheduler).
                if self._asked_retry:
                    raise RobotRefused(f"robot-side error, again after a retry: {e}") from None
                self._asked_retry = True
                op.ask(f"robot-side error: {e}\nPress Enter to retry (once), or q + Enter to end the session.",
                       _parse_start)
        op.say(f"running: up to {spec.max_steps} {spec.step_unit.replace('_', ' ')} at {opts.control_hz:g} Hz; "
               "press Enter to stop the episode early.")
        self._steps, self._ticks, self._next_tick = 0, [], None
        self._rtt = {"step": [], "obs": []}
        self._last = self._observation(raw)
        return self._last

    def _reset_arm(self, opts: WidowXOptions, image_size: int) -> RobotObservation:
        """Connect if needed, reset the arm, move it to the start pose; returns the first observation."""
        self._ensure_client(opts, image_size)
        for what, status in (("reset", lambda: self.client.reset()),
                             ("move to the start pose", lambda: self.client.move(
                                 np.asarray(opts.start_pose), duration=opts.move_duration, blocking=True,
                                 timeout_s=max(opts.timeout_s, 10 * opts.move_duration)))):
            code = status()
            if code != WidowXStatus.SUCCESS:
                raise ProtocolError(f"the robot's {what} failed (status {WidowXStatus.NAMES.get(code, code)})")
        return self._observe()

    def _step(self, action: np.ndarray, render: bool) -> StepResult:
        assert self.client is not None and self.opts is not None, "reset() first"
        if self.operator.stop_requested():
            self._ended_by = "operator_stop"
            return StepResult(self._last, success=False, stop="the operator stopped the episode")
        self._pace()
        g = self.action_spec.gripper
        # Sent as it is, as the reference scripts do; a value outside the Bridge range (e.g. a
        # LIBERO-convention -1 = "open", which this robot takes as closed) is counted in the record.
        self._off_convention += not (min(g.open, g.close) <= float(action[-1]) <= max(g.open, g.close))
        try:
            t = time.perf_counter()
            status = self.client.step_action(np.asarray(action, dtype=np.float64), blocking=self.opts.blocking)
            self._rtt["step"].append(time.perf_counter() - t)
            self._steps += 1
            if status != WidowXStatus.SUCCESS:
                self._ended_by = "robot_failure"
                return StepResult(self._last, success=False,
                                  failure=f"the robot refused step_action (status {WidowXStatus.NAMES.get(status, status)})")
            if render:
                self._last = self._observation(self._observe())
        except RobotTimeout as e:
            self._ended_by = "connection_lost"
            self._close_client()  # a fresh connection (and handshake) at the next reset
            return StepResult(self._last, success=False, failure=str(e))
        except ForbiddenPickle:
            raise
        except ProtocolError as e:
            # Unusable again after the operator's retry: the episode ends, its reason recorded.
            self._ended_by = "robot_error"
            return StepResult(self._last, success=False, failure=f"robot-side error: {e}")
        return StepResult(self._last, success=False)

    def judge(self, termination: str) -> bool:
        """Ask the operator for the outcome; it is the episode's success."""
        task = self.opts.task if self.opts else {}
        n = int(task.get("objects", 1) or 1)
        op = self.operator
        op.discard_pending()
        ended = {"step_limit": "the step limit was reached", "operator_stop": "you stopped it"}.get(
            termination, f"it ended with {termination}")
        if self._ended_by == "connection_lost":
            ended += ": the connection to the robot was lost"
        elif self._ended_by == "robot_failure":
            ended += ": the robot refused an action"
        elif self._ended_by == "robot_error":
            ended += ": the robot sent an unusable observation"
        op.say(f"episode over after {self._steps} steps ({ended}).")
        if self._ended_by == "robot_error":
            # The policy was cut off mid-trial by bad data: not an outcome to judge.
            self._verdict = {"operator_outcome": "not asked (robot-side error)"}
            op.say("recorded: failure (robot-side error)")
            return False
        if n > 1:
            placed = op.ask(f"How many of the {n} objects were placed as instructed? [0-{n}]", _parse_count(n))
            success = placed == n
            self._verdict = {"objects_placed": placed, "objects_total": n, "partial_success": placed / n}
        else:
            success = op.ask("Outcome? s = success, f = failure", _parse_outcome)
            self._verdict = {}
        self._verdict["operator_outcome"] = "success" if success else "failure"
        op.say(f"recorded: {self._verdict['operator_outcome']}")
        return success

    def frame(self, observation: Observation) -> np.ndarray | None:
        views = [observation.images[c] for c in self._video_cameras if c in observation.images]
        return views[0] if views else None

    def episode_info(self) -> dict[str, Any]:
        opts = self.opts
        task = opts.task if opts else {}
        info: dict[str, Any] = {k: task[k] for k in ("category", "variant", "objects") if k in task}
        info.update(self._verdict)
        info["ended_by"] = self._ended_by or "protocol"
        if opts is not None:
            info["robot"] = f"{opts.robot_host}:{opts.robot_port}"
            info["control_hz"] = opts.control_hz
        if self._config_hash:
            # Kept after a lost connection closed the client. Ours hashes the JSON's bytes;
            # agentlace's (what its handshake compares) hashes the pickled JSON string.
            info["config_hash"] = self._config_hash
            info["agentlace_config_hash"] = self._agentlace_hash
        if self._encodings:
            # How `full_image` travelled: "jpeg" (bridge_data_robot since 6325002) or "raw" (older).
            info["image_encoding"] = "+".join(sorted(self._encodings))
            info["image_shape"] = list(self._frame_shape or ())
            info["image_wire_kb_mean"] = round(float(np.mean(self._wire_bytes)) / 1024, 1)
            if self._decode_s:
                info["jpeg_decode_ms_mean"] = round(1000 * float(np.mean(self._decode_s)), 3)
                info["jpeg_decode_ms_max"] = round(1000 * float(np.max(self._decode_s)), 3)
        info["gripper_convention"] = self.action_spec.gripper.name
        info["gripper_outside_convention"] = self._off_convention
        info.update(pacing_stats(self._ticks, opts.control_hz if opts else 0.0))
        for name, values in self._rtt.items():
            if values:
                info[f"{name}_rtt_ms_mean"] = round(1000 * float(np.mean(values)), 2)
        return info

    def close(self) -> None:
        self._close_client()

    # -- helpers ------------------------------------------------------------------------------
    def _pace(self) -> None:
        """Sleep until the next control tick. A late step starts at once and the grid restarts from it:
        the robot never gets two commands less than a period apart to catch up."""
        period = 1.0 / self.opts.control_hz
        now = time.perf_counter()
        if self._next_tick is not None and now < self._next_tick:
            time.sleep(self._next_tick - now)
            now = time.perf_counter()
        self._ticks.append(now)
        # Keep to the tick grid (sleep overshoot does not accumulate into drift); a step more than
        # 10% of a period late starts a new grid.
        on_grid = self._next_tick is not None and now - self._next_tick < 0.1 * period
        self._next_tick = self._next_tick + period if on_grid else now + period

    def _observe(self) -> RobotObservation:
        """One checked observation. An unusable one: the operator is asked once (per episode)
        whether to ask the robot again; a refused one (hostile pickle) ends the session."""
        while True:
            try:
                return self._observe_once()
            except (ForbiddenPickle, RobotTimeout):
                raise
            except ProtocolError as e:
                if self._asked_retry:
                    raise
                self._asked_retry = True
                self.operator.discard_pending()
                self.operator.ask(f"robot-side error: {e}\nPress Enter to ask the robot again (once), "
                                  "or q + Enter to end the session.", _parse_start)

    def _observe_once(self) -> RobotObservation:
        t = time.perf_counter()
        raw = self.client.get_observation()
        self._rtt["obs"].append(time.perf_counter() - t)
        image = raw.full_image
        if self._frame_shape is None:
            self._frame_shape = image.array.shape
        elif image.array.shape != self._frame_shape:
            raise ProtocolError(f"the robot's 'full_image' changed size mid-episode ({self._frame_shape[1]}x"
                                f"{self._frame_shape[0]} -> {image.array.shape[1]}x{image.array.shape[0]}): "
                                "check the server's camera_topics")
        if self._want_state and raw.state is None:
            raise ProtocolError("the robot's observation has no 7-value 'state' and the policy asks for it: "
                                "check the robot computer's server log")
        self._encodings[image.encoding] = self._encodings.get(image.encoding, 0) + 1
        self._wire_bytes.append(image.wire_bytes)
        if image.encoding == "jpeg":
            self._decode_s.append(image.decode_s)
        return raw

    def _observation(self, raw: RobotObservation) -> Observation:
        # The one camera goes under every name the policy and video asked for (e.g. `agentview`).
        images = {name: raw.full_image.array for name in dict.fromkeys(self._cameras + self._video_cameras)}
        # Proprioception only for policies that ask for state (NORA uses the image and instruction).
        state = {"state": raw.state} if self._want_state else None
        return Observation(instruction=self._instruction, episode=self._episode, images=images, state=state)


def pacing_stats(ticks: list[float], target_hz: float) -> dict[str, Any]:
    """Achieved control rate and jitter of the step start times (seconds, monotonic clock)."""
    if len(ticks) < 2 or target_hz <= 0:
        return {"achieved_hz": None, "jitter_ms_std": None, "jitter_ms_max": None, "late_steps": 0}
    intervals = np.diff(ticks)
    period = 1.0 / target_hz
    dev = intervals - period
    return {"achieved_hz": round(float(len(intervals) / (ticks[-1] - ticks[0])), 3),
            "jitter_ms_std": round(1000 * float(np.std(intervals)), 3),
            "jitter_ms_max": round(1000 * float(np.max(np.abs(dev))), 3),
            # A step that started more than 10% of a period late (the policy or robot was too slow).
            "late_steps": int(np.sum(dev > 0.1 * period))}


def _camera_key(name: str) -> str:
    """The canonical camera a name means."""
    canonical = WIDOWX_ACTION_SPEC.resolve_camera(name)
    if canonical is None:
        raise UserError(f"the WidowX server sends one third-person camera: ask for 'agentview' (or 'full_image'), "
                        f"not {name!r}")
    return canonical


def _parse_start(answer: str) -> None:
    if answer.lower() in ("q", "quit"):
        raise OperatorAbort("the operator ended the session")
    if answer:
        raise ValueError("press Enter to start, or q + Enter to end the session")


def _parse_outcome(answer: str) -> bool:
    a = answer.lower()
    if a in ("s", "success", "y", "yes"):
        return True
    if a in ("f", "failure", "fail", "n", "no"):
        return False
    if a in ("q", "quit"):
        raise OperatorAbort("the operator ended the session")
    raise ValueError("answer s (success) or f (failure)")


def _parse_count(n: int) -> Callable[[str], int]:
    def parse(answer: str) -> int:
        if answer.lower() in ("q", "quit"):
            raise OperatorAbort("the operator ended the session")
        if answer.isdigit() and 0 <= int(answer) <= n:
            return int(answer)
        raise ValueError(f"answer a number from 0 to {n}")
    return parse
