"""Ray env workers: each process hosts one env and runs whole episodes through the protocol.

The policy either lives in the worker (cheap policies: no inter-process hop) or in a batching
policy actor shared by many workers (models: one replica keeps a GPU busy).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from nora_bench import UserError
from nora_bench.envs import configure_rendering, env_class, make_env
from nora_bench.episode import EpisodeOutcome, EpisodeSpec, InfrastructureError, ProtocolRun
from nora_bench.policies import make_policy
from nora_bench.run.coalescing import QueryCoalescer, chunk_from_wire
from nora_bench.run.policy_actor import PolicyRestarted
from nora_bench.types import ActionChunk, EpisodeInfo, Observation, Requirements
from nora_bench.video import VideoWriter

# About 1.5 GB per LIBERO env (REFERENCE.md section 5): Ray places no more workers than memory allows.
ENV_WORKER_MEMORY = int(1.5 * 2**30)
# How long a worker waits for a restarting policy actor (a 3B model takes a while to load).
POLICY_RESTART_WAIT_S = 600.0


class ActorPolicy:
    """The Policy contract over a policy actor: one remote call per method (per query), or, in a
    worker running several envs, queries gathered with the other envs' into one call (`coalescer`)."""

    def __init__(self, actor, spec: EpisodeSpec, coalescer: QueryCoalescer | None = None):
        self.actor, self.spec, self.coalescer = actor, spec, coalescer
        self.requirements = Requirements(cameras=spec.cameras, state=spec.state)

    def start_episode(self, info: EpisodeInfo) -> None:
        _call(self.actor.start_episode.remote(info))
        if self.coalescer is not None:
            self.coalescer.start()

    def act(self, observations: list[Observation]) -> list[ActionChunk]:
        # Only the images the policy asked for travel (not the video's extra cameras).
        spec = self.spec
        wanted = [Observation(obs.instruction, obs.episode, {c: obs.images[c] for c in spec.cameras if c in obs.images},
                              obs.state if spec.state else None) for obs in observations]
        if self.coalescer is not None:
            return [self.coalescer.act(obs) for obs in wanted]
        return [_call(self.actor.act.remote(obs)) for obs in wanted]

    def end_episode(self, key: str) -> None:
        if self.coalescer is not None:
            self.coalescer.end()
        try:  # best effort: a dead actor has freed the episode's state anyway
            ray.get(self.actor.end_episode.remote(key), timeout=30)
        except (RayActorError, GetTimeoutError, PolicyRestarted):
            pass


def _send_batch(actor):
    """`QueryCoalescer.send` over a policy actor: one `act_batch` call; errors per query."""
    def send(observations: list[Observation]) -> list:
        try:
            answers = _call(actor.act_batch.remote(observations))
        except InfrastructureError as e:
            return [e] * len(observations)
        return [_wire_error(a) if isinstance(a, BaseException) else chunk_from_wire(a) for a in answers]
    return send


def _wire_error(e: BaseException) -> BaseException:
    """An exception returned in act_batch's answer list, as `_call` would have raised it."""
    if isinstance(e, PolicyRestarted):
        return InfrastructureError(f"policy actor died and was restarted: {str(e).splitlines()[0][:300]}")
    return e


def _call(ref):
    try:
        return ray.get(ref)
    except RayActorError as e:
        raise InfrastructureError(f"policy actor died: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    except PolicyRestarted as e:  # raised in the actor, re-raised here by ray.get
        raise InfrastructureError(f"policy actor died and was restarted: {str(e).splitlines()[0][:300]}") from e


@dataclass
class _Slot:
    """One env of a worker and, for an in-worker policy, its own policy instance (policies keep
    per-episode state and are not re-entrant)."""

    policy: Any = None
    env: Any = None
    task: tuple | None = None  # (suite, task id) of the last episode it ran: reused first


class EnvWorker:
    """Runs episodes of one env kind, with a local policy or a handle to a policy actor.

    With `envs_per_worker` K > 1 the worker holds up to K envs and runs K episodes at once (a threaded
    Ray actor, `max_concurrency=K`); their queries to a policy actor are coalesced into one call."""

    def __init__(self, policy_preset: dict, env_kind: str, name: str = "", policy_actor=None,
                 render_threads: int | None = None, defer_build_error: bool = False,
                 envs_per_worker: int = 1, coalesce_wait_ms: float = 2.0):
        if render_threads:
            # llvmpipe renders with one thread per core by default; several workers on one
            # machine oversubscribe the cores unless each keeps to its share.
            os.environ["LP_NUM_THREADS"] = str(render_threads)
        configure_rendering()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.policy_actor = policy_actor
        self.env_kind = env_kind
        self.env_cls = env_class(env_kind)
        self.coalescer = (QueryCoalescer(_send_batch(policy_actor), coalesce_wait_ms)
                          if policy_actor is not None and envs_per_worker > 1 else None)
        self.lock = threading.Lock()
        # A Ray actor whose constructor raises leaves its error in Ray's worker logs only: keep it
        # for `ready()`, which the driver awaits before any episode (deferred only on Ray).
        self.build_error: str | None = None
        self.slots: list[_Slot] = []
        self.free: list[_Slot] = []
        try:
            self.slots = [_Slot(None if policy_actor is not None else make_policy(policy_preset, self.env_cls.action_spec))
                          for _ in range(envs_per_worker)]
            self.free = list(self.slots)
        except UserError as e:
            if not defer_build_error:
                raise
            self.build_error = str(e)

    @property
    def policy(self):
        """The in-worker policy of the first env (with one env per worker, the worker's policy)."""
        return self.slots[0].policy if self.slots else None

    def ready(self) -> str | None:
        """None once the worker (and its local policy) is built, else why it could not be."""
        return self.build_error

    def pid(self) -> int:
        return os.getpid()

    def coalesce_stats(self) -> dict:
        c = self.coalescer.stats if self.coalescer else None
        return {"calls": c.calls, "queries": c.queries} if c else {}

    def _acquire(self, spec: EpisodeSpec) -> _Slot:
        """A free slot, the one whose env last ran this task first (no rebuild)."""
        with self.lock:
            if not self.free:  # the scheduler sends at most K episodes at once
                raise RuntimeError("env worker got more concurrent episodes than it has envs")
            task = (spec.suite, spec.task_id)
            j = next((j for j, slot in enumerate(self.free) if slot.task == task), 0)
            slot = self.free.pop(j)
            slot.task = task
            return slot

    def run(self, spec: EpisodeSpec) -> tuple[EpisodeOutcome, bytes | None]:
        """One episode -> (its outcome, mp4 bytes or None). Exceptions become an ERROR outcome."""
        # The env's control rate: videos play in real time.
        fps = self.env_cls.video_fps(dict(spec.env_options))
        writer = VideoWriter(fps=fps) if spec.video_cameras else None
        slot = self._acquire(spec)
        try:
            if spec.env != self.env_kind:
                raise ValueError(f"a {self.env_kind} worker got an episode of env {spec.env!r}")
            if slot.env is None:
                slot.env = make_env(spec.env)
            policy = slot.policy if slot.policy is not None else ActorPolicy(self.policy_actor, spec, self.coalescer)
            out = ProtocolRun(slot.env, spec, policy, writer.add if writer else None).run()
            out.task, out.instruction = slot.env.info.get("task", ""), slot.env.info.get("instruction", "")
            out.env_info = slot.env.episode_info()
        except InfrastructureError as e:
            # The env is fine; the policy actor (or a server the policy talks to) failed. Wait for
            # Ray to restart an actor, then re-run.
            if self.policy_actor is not None:
                self._wait_for_policy()
            out = EpisodeOutcome.errored(str(e))
        except Exception as e:
            # The env may be in any state now: rebuild it for the next episode.
            self._close_env(slot)
            out = EpisodeOutcome.errored(f"{type(e).__name__}: {e}".strip(), traceback.format_exc(limit=8))
        except BaseException:  # cancelled or interrupted: no record, and no half-written video left behind
            if writer:
                writer.discard()
            raise
        finally:
            with self.lock:
                self.free.append(slot)
        video = writer.finish() if writer else None
        out.worker, out.node = self.name, self.node
        return out, video

    def _wait_for_policy(self) -> None:
        deadline = time.monotonic() + POLICY_RESTART_WAIT_S
        while time.monotonic() < deadline:
            try:
                ray.get(self.policy_actor.requirements.remote(), timeout=5)
                return
            except (RayActorError, GetTimeoutError):
                time.sleep(1.0)

    @staticmethod
    def _close_env(slot: _Slot) -> None:
        if slot.env is not None:
            try:
                slot.env.close()
            except Exception:
                pass
        slot.env, slot.task = None, None

    def shutdown(self) -> None:
        with self.lock:
            for slot in self.slots:
                self._close_env(slot)


def await_built(handles: list, what: str) -> None:
    """Wait until every actor in `handles` is constructed; a UserError with the first one's build
    error (e.g. a policy that cannot be built) instead of episodes failing one by one."""
    for handle, ref in [(h, h.ready.remote()) for h in handles]:
        try:
            error = ray.get(ref)
        except RayActorError as e:
            raise UserError(f"the {what} died while being built: {str(e).strip().splitlines()[0][:300]}") from None
        if error:
            raise UserError(error)


RemoteEnvWorker = ray.remote(EnvWorker)
