"""Policies for fault tests, importable by Ray worker processes (conftest puts tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from nora_bench.policies.trivial import ZeroConfig, ZeroPolicy
from nora_bench.types import ActionChunk, ActionSpec, Requirements


def stall(marker: str) -> None:
    """Write this process's id to `marker`, then block until the test kills the process."""
    with open(f"{marker}.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(f"{marker}.tmp", marker)  # the test never reads a half-written pid
    time.sleep(3600)


class _StallingPolicy(ZeroPolicy):
    """The zero policy that counts each episode's queries and, where `marker_for(episode, query)` names
    a marker that does not exist yet, writes its process id there and blocks (`stall`)."""

    def __init__(self, config: ZeroConfig, action_spec: ActionSpec):
        super().__init__(config, action_spec)
        self.config = config
        self.queries: dict[str, int] = {}

    def marker_for(self, episode: str, query: int) -> str | None:
        raise NotImplementedError

    def start_episode(self, info) -> None:
        self.queries[info.key] = 0

    def act(self, observations):
        for o in observations:
            self.queries[o.episode] = self.queries.get(o.episode, 0) + 1
            marker = self.marker_for(o.episode, self.queries[o.episode])
            if marker is not None and not os.path.exists(marker):
                stall(marker)
        return super().act(observations)


@dataclass(frozen=True, kw_only=True)
class StallOnceConfig(ZeroConfig):
    marker: str
    episode: str
    at_query: int = 3


class StallOncePolicy(_StallingPolicy):
    """On query `at_query` of `episode`, the first time in this run, it writes its process id to
    `marker` and blocks: the test then kills that process with this call in flight for a known
    episode (a defined point, however slow the machine is)."""

    config_class = StallOnceConfig

    def marker_for(self, episode: str, query: int) -> str | None:
        c = self.config
        return c.marker if episode == c.episode and query == c.at_query else None


class RaisingPolicy(ZeroPolicy):
    """Raises on every query: a broken policy (a setup error, not a 0% result)."""

    def act(self, observations):
        raise ValueError("this policy is broken")


class BrokenBuildPolicy(ZeroPolicy):
    """Cannot be built: its construction reads a file that is not JSON (like a bad config.json).
    A class without `config_class`: its constructor's keywords are its preset keys."""

    def __init__(self, action_spec: ActionSpec, path: str, **zero):
        import json

        super().__init__(ZeroConfig(**zero), action_spec)
        with open(path) as f:
            json.load(f)


class InterruptingPolicy:
    """Acts `after` times, then raises KeyboardInterrupt (Ctrl-C arriving mid-episode). A plain class
    with no base and no `config_class`, as a user might write one."""

    def __init__(self, action_spec: ActionSpec, after: int = 3):
        self.requirements = Requirements(cameras=())
        self.dummy_action = action_spec.dummy_action
        self.after, self.calls = after, 0

    def start_episode(self, info) -> None:
        pass

    def act(self, observations):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return [ActionChunk(self.dummy_action[None].copy()) for _ in observations]

    def end_episode(self, key: str) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class StallEveryEpisodeConfig(ZeroConfig):
    marker_dir: str
    at_query: int = 3


class StallEveryEpisodePolicy(_StallingPolicy):
    """On query `at_query` of every episode, until `marker_dir` holds a marker for it, it writes its
    process id to that marker and blocks: the test kills the process once all the episodes it waits
    for are stalled in it (a worker running several envs, all mid-episode)."""

    config_class = StallEveryEpisodeConfig

    def marker_for(self, episode: str, query: int) -> str | None:
        c = self.config
        return os.path.join(c.marker_dir, episode.replace("/", "_")) if query == c.at_query else None
