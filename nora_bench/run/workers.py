"""Ray env workers: each process hosts one env and runs whole episodes through the protocol.

The policy either lives in the worker (cheap policies: no inter-process hop) or in a batching
policy actor shared by many workers (models: one replica keeps a GPU busy).
"""

from __future__ import annotations

import os
import socket
import time
import traceback

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from nora_bench import UserError
from nora_bench.envs import configure_rendering, env_class, make_env
from nora_bench.episode import EpisodeOutcome, EpisodeSpec, InfrastructureError, ProtocolRun
from nora_bench.policies import make_policy
from nora_bench.run.policy_actor import PolicyRestarted
from nora_bench.types import ActionChunk, EpisodeInfo, Observation, Requirements
from nora_bench.video import VideoWriter

# About 1.5 GB per LIBERO env (REFERENCE.md section 5): Ray places no more workers than memory allows.
ENV_WORKER_MEMORY = int(1.5 * 2**30)
# How long a worker waits for a restarting policy actor (a 3B model takes a while to load).
POLICY_RESTART_WAIT_S = 600.0


class ActorPolicy:
    """The Policy contract over a policy actor: one remote call per method."""

    def __init__(self, actor, spec: EpisodeSpec):
        self.actor, self.spec = actor, spec
        self.requirements = Requirements(cameras=spec.cameras, state=spec.state)

    def start_episode(self, info: EpisodeInfo) -> None:
        _call(self.actor.start_episode.remote(info))

    def act(self, observations: list[Observation]) -> list[ActionChunk]:
        # Only the images the policy asked for travel (not the video's extra cameras).
        spec = self.spec
        return [_call(self.actor.act.remote(Observation(
            obs.instruction, obs.episode, {c: obs.images[c] for c in spec.cameras if c in obs.images},
            obs.state if spec.state else None))) for obs in observations]

    def end_episode(self, key: str) -> None:
        try:  # best effort: a dead actor has freed the episode's state anyway
            ray.get(self.actor.end_episode.remote(key), timeout=30)
        except (RayActorError, GetTimeoutError, PolicyRestarted):
            pass


def _call(ref):
    try:
        return ray.get(ref)
    except RayActorError as e:
        raise InfrastructureError(f"policy actor died: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    except PolicyRestarted as e:  # raised in the actor, re-raised here by ray.get
        raise InfrastructureError(f"policy actor died and was restarted: {str(e).splitlines()[0][:300]}") from e


class EnvWorker:
    """Runs episodes of one env kind, with a local policy or a handle to a policy actor."""

    def __init__(self, policy_preset: dict, env_kind: str, name: str = "", policy_actor=None,
                 render_threads: int | None = None, defer_build_error: bool = False):
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
        self.env = None
        # A Ray actor whose constructor raises leaves its error in Ray's worker logs only: keep it
        # for `ready()`, which the driver awaits before any episode (deferred only on Ray).
        self.build_error: str | None = None
        try:
            self.policy = (None if policy_actor is not None
                           else make_policy(policy_preset, self.env_cls.action_spec))
        except UserError as e:
            if not defer_build_error:
                raise
            self.policy, self.build_error = None, str(e)

    def ready(self) -> str | None:
        """None once the worker (and its local policy) is built, else why it could not be."""
        return self.build_error

    def pid(self) -> int:
        return os.getpid()

    def run(self, spec: EpisodeSpec) -> tuple[EpisodeOutcome, bytes | None]:
        """One episode -> (its outcome, mp4 bytes or None). Exceptions become an ERROR outcome."""
        # The env's control rate: videos play in real time.
        fps = self.env_cls.video_fps(dict(spec.env_options))
        writer = VideoWriter(fps=fps) if spec.video_cameras else None
        try:
            if spec.env != self.env_kind:
                raise ValueError(f"a {self.env_kind} worker got an episode of env {spec.env!r}")
            if self.env is None:
                self.env = make_env(spec.env)
            policy = self.policy if self.policy is not None else ActorPolicy(self.policy_actor, spec)
            out = ProtocolRun(self.env, spec, policy, writer.add if writer else None).run()
            out.task, out.instruction = self.env.info.get("task", ""), self.env.info.get("instruction", "")
            out.env_info = self.env.episode_info()
        except InfrastructureError as e:
            # The env is fine; the policy actor (or a server the policy talks to) failed. Wait for
            # Ray to restart an actor, then re-run.
            if self.policy_actor is not None:
                self._wait_for_policy()
            out = EpisodeOutcome.errored(str(e))
        except Exception as e:
            # The env may be in any state now: rebuild it for the next episode.
            self._close_env()
            out = EpisodeOutcome.errored(f"{type(e).__name__}: {e}".strip(), traceback.format_exc(limit=8))
        except BaseException:  # cancelled or interrupted: no record, and no half-written video left behind
            if writer:
                writer.discard()
            raise
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

    def _close_env(self) -> None:
        if self.env is not None:
            try:
                self.env.close()
            except Exception:
                pass
        self.env = None

    def shutdown(self) -> None:
        self._close_env()


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
