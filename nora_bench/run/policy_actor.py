"""The batching policy actor: one Ray actor holds a model and serves many env workers.

Env workers call `act(observation)` concurrently; the actor answers them in batches through
`nora_bench.batching.Batcher` (the same loop `nora-bench serve` uses), so N env workers keep one
GPU busy. Why not Ray Serve's `@serve.batch`: it only works inside a Serve deployment, whose
router may send an episode's calls to different replicas; policies keep per-episode state
(seeds, the last gripper command), so each env worker is pinned to one replica.
"""

from __future__ import annotations

from nora_bench import UserError
from nora_bench.batching import Batcher, BatchOptions
from nora_bench.policies import make_policy
from nora_bench.types import ActionSpec, EpisodeInfo

__all__ = ["BatchOptions", "PolicyActor", "PolicyRestarted"]


class PolicyRestarted(RuntimeError):
    """An `act` for an episode this replica never started: it was restarted and lost the episode's state."""


class PolicyActor:
    """Async Ray actor around a `Policy`; model calls run one at a time on a single thread."""

    def __init__(self, preset: dict, action_spec: ActionSpec, options: BatchOptions = BatchOptions()):
        # A constructor that raises would leave the error in Ray's logs and the run waiting: keep it
        # for `ready()`, which the driver awaits before any episode.
        self.build_error: str | None = None
        try:
            self.policy = make_policy(preset, action_spec)
        except UserError as e:
            self.policy, self.build_error = None, str(e)
        self._episodes: set[str] = set()
        # The open episodes are the callers: a batch holding all of them goes without waiting.
        self.batcher = Batcher(self.policy, options, callers=lambda: len(self._episodes))

    async def ready(self) -> str | None:
        """None once the policy is built, else why it could not be."""
        return self.build_error

    async def requirements(self):
        return self.policy.requirements

    async def start_episode(self, info: EpisodeInfo) -> None:
        self._episodes.add(info.key)
        await self.batcher.call(self.policy.start_episode, info)

    async def end_episode(self, key: str) -> None:
        if key in self._episodes:
            self._episodes.discard(key)
            await self.batcher.call(self.policy.end_episode, key)

    async def act(self, observation):
        if observation.episode not in self._episodes:
            raise PolicyRestarted(f"policy actor restarted during episode {observation.episode} and lost its state")
        return await self.batcher.act(observation)

    async def act_batch(self, observations: list) -> list:
        """Several episodes' queries in one call (an env worker running several envs): answers as
        plain tuples (run/coalescing.py), an exception in the place of a query that failed."""
        import asyncio

        from nora_bench.run.coalescing import chunk_to_wire

        answers = await asyncio.gather(*[self.act(o) for o in observations], return_exceptions=True)
        return [a if isinstance(a, BaseException) else chunk_to_wire(a) for a in answers]

    async def stats(self) -> dict:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), **self.batcher.stats.summary()}
