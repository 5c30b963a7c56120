"""The batching policy actor: one Ray actor holds a model and serves many env workers.

Env workers call `act(observation)` concurrently; the actor gathers the calls that arrive within
`max_wait_ms` (up to `max_batch_size`) and answers them with one `policy.act(batch)` call, so N
env workers keep one GPU busy. Why not Ray Serve's `@serve.batch`: it only works inside a Serve
deployment, whose router may send an episode's calls to different replicas; policies keep
per-episode state (seeds, the last gripper command), so each env worker is pinned to one replica.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nora_bench import UserError
from nora_bench.policies import make_policy


class PolicyRestarted(RuntimeError):
    """An `act` for an episode this replica never started: it was restarted and lost the episode's state."""


@dataclass(frozen=True)
class BatchOptions:
    max_batch_size: int = 8
    max_wait_ms: float = 5.0


class PolicyActor:
    """Async Ray actor around a `Policy`; model calls run one at a time on a single thread."""

    def __init__(self, preset: dict, options: BatchOptions = BatchOptions()):
        # A constructor that raises would leave the error in Ray's logs and the run waiting: keep it
        # for `ready()`, which the driver awaits before any episode.
        self.build_error: str | None = None
        try:
            self.policy = make_policy(preset)
        except UserError as e:
            self.policy, self.build_error = None, str(e)
        self.options = options
        self._pending: list[tuple] = []
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        # One thread: the model is not re-entrant, and the event loop must stay free to queue calls.
        self._model_thread = ThreadPoolExecutor(max_workers=1)
        self.batch_sizes: list[int] = []
        self._episodes: set[str] = set()
        self.busy_s = 0.0

    async def ready(self) -> str | None:
        """None once the policy is built, else why it could not be."""
        return self.build_error

    async def requirements(self):
        return self.policy.requirements

    async def start_episode(self, spec) -> None:
        self._episodes.add(spec.key)
        self.policy.start_episode(spec)

    async def act(self, observation):
        if observation.episode not in self._episodes:
            raise PolicyRestarted(f"policy actor restarted during episode {observation.episode} and lost its state")
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((observation, fut))
        self._wake.set()
        return await fut

    async def stats(self) -> dict:
        sizes = self.batch_sizes
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "batches": len(sizes), "requests": sum(sizes), "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
                "max_batch": max(sizes, default=0), "busy_s": round(self.busy_s, 3)}

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            # Give concurrent callers a moment to join the batch.
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(self._pending) < self.options.max_batch_size and loop.time() < deadline:
                await asyncio.sleep(min(0.001, max(0.0, deadline - loop.time())))
            batch = self._pending[: self.options.max_batch_size]
            self._pending = self._pending[len(batch):]
            if self._pending:
                self._wake.set()
            t = time.perf_counter()
            try:
                chunks = await loop.run_in_executor(self._model_thread, self.policy.act, [o for o, _ in batch])
                if len(chunks) != len(batch):
                    raise RuntimeError(f"policy returned {len(chunks)} chunks for {len(batch)} observations")
            except Exception as e:  # every caller of the batch gets the error, recorded per episode
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
            else:
                for (_, fut), chunk in zip(batch, chunks):
                    if not fut.done():
                        fut.set_result(chunk)
            self.busy_s += time.perf_counter() - t
            self.batch_sizes.append(len(batch))
