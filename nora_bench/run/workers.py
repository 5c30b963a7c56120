"""Ray env workers: each process hosts one env and runs whole episodes through the protocol."""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

import ray

from nora_bench.envs import configure_rendering, make_env
from nora_bench.episode import ERROR, EpisodeSpec, ProtocolRun
from nora_bench.policies import make_policy
from nora_bench.video import VideoWriter

# About 1.5 GB per LIBERO env (REFERENCE.md section 5): Ray places no more workers than memory allows.
ENV_WORKER_MEMORY = int(1.5 * 2**30)


class EnvWorker:
    """Runs episodes on its env; the policy lives in the worker (one replica per worker)."""

    def __init__(self, policy_preset: dict, name: str = ""):
        configure_rendering()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.policy = make_policy(policy_preset)
        self.env = None
        self.env_kind = None

    def pid(self) -> int:
        return os.getpid()

    def requirements(self):
        return self.policy.requirements

    def run(self, spec: EpisodeSpec) -> tuple[dict[str, Any], bytes | None]:
        """One episode -> (outcome fields, mp4 bytes or None). Exceptions become an ERROR outcome."""
        from nora_bench.envs import video_fps  # the env's control rate: videos play in real time

        writer = VideoWriter(fps=video_fps(spec)) if spec.video_cameras else None
        try:
            if self.env is None or self.env_kind != spec.env:
                self._close_env()
                self.env = make_env(spec.env)
                self.env_kind = spec.env
            self.policy.start_episode(spec)
            act = lambda obs: self.policy.act([obs])[0]  # noqa: E731
            out = ProtocolRun(self.env, spec, act, writer.add if writer else None).run()
            out.update(self.env.info)
            out["env_info"] = self.env.episode_info()
        except Exception as e:
            # The env may be in any state now: rebuild it for the next episode.
            self._close_env()
            out = {"success": None, "termination": ERROR,
                   "error": f"{type(e).__name__}: {e}".strip(),
                   "traceback": traceback.format_exc(limit=8)}
        video = writer.finish() if writer else None
        out["worker"] = self.name
        return out, video

    def _close_env(self) -> None:
        if self.env is not None:
            try:
                self.env.close()
            except Exception:
                pass
        self.env = None
        self.env_kind = None

    def shutdown(self) -> None:
        self._close_env()


RemoteEnvWorker = ray.remote(EnvWorker)
