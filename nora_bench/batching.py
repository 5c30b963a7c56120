"""The one batching loop: concurrent queries in, one `policy.act(batch)` call per batch out.

Used by the Ray policy actor (env workers as callers) and by `nora-bench serve` (websocket
connections as callers), so both batch the same way. Requests that arrive within `max_wait_ms`
(up to `max_batch_size`) share one call. A policy may define `batch_key(observation)`: only
requests with equal keys share a batch (NORA: prompts of one token length, so that a bf16 batch
gives the same tokens as single calls); the oldest waiting request decides which key goes next,
so no caller waits behind a stream of others. When the owner says how many callers there are
(`callers()`: open episodes), a batch goes as soon as all of them are in it instead of waiting out
`max_wait_ms` (a lone client pays no batching delay).

The policy runs on one thread (models are not re-entrant); `start_episode` / `end_episode` run
on that thread too, between batches, so they never race an `act`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class BatchOptions:
    max_batch_size: int = 8
    max_wait_ms: float = 5.0


@dataclass
class BatchStats:
    """What the batcher did: batch sizes and the time the policy spent in `act`."""

    batch_sizes: list[int] = field(default_factory=list)
    busy_s: float = 0.0

    def summary(self) -> dict:
        sizes = self.batch_sizes
        return {"batches": len(sizes), "requests": sum(sizes), "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
                "max_batch": max(sizes, default=0), "busy_s": round(self.busy_s, 3)}


@dataclass
class _Request:
    observation: Any
    key: Any
    future: asyncio.Future
    queued_at: float


@dataclass(frozen=True)
class BatchTiming:
    """Per-request facts a server can report: how long the request queued, the batch it ran in."""

    queue_ms: float
    infer_ms: float
    batch_size: int


class Batcher:
    """Batches `submit` calls from many coroutines of one event loop into `policy.act` calls."""

    def __init__(self, policy, options: BatchOptions = BatchOptions(), callers: Callable[[], int] | None = None):
        if options.max_batch_size < 1 or options.max_wait_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.policy = policy
        self.options = options
        self.stats = BatchStats()
        self._callers = callers
        self._key: Callable[[Any], Any] | None = getattr(policy, "batch_key", None)
        self._pending: list[_Request] = []
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")

    async def submit(self, observation) -> tuple[Any, BatchTiming]:
        """The policy's ActionChunk for one observation, and how it was served."""
        loop = asyncio.get_running_loop()
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = loop.create_task(self._batch_loop())
        key = self._key(observation) if self._key is not None else None
        request = _Request(observation, key, loop.create_future(), loop.time())
        self._pending.append(request)
        self._wake.set()
        return await request.future

    async def act(self, observation):
        """Only the ActionChunk (what the Ray actor returns)."""
        chunk, _ = await self.submit(observation)
        return chunk

    async def call(self, fn: Callable, *args):
        """Run `fn(*args)` on the policy's thread (episode start/end), in order with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def close(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(RuntimeError("the batcher was closed"))
        self._pending = []
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _enough(self) -> int:
        """The batch size worth waiting for: the largest batch, or every caller there is."""
        n = self.options.max_batch_size
        return max(1, min(n, self._callers())) if self._callers is not None else n

    def _same_key(self, key) -> list[_Request]:
        return [r for r in self._pending if r.key == key][: self.options.max_batch_size]

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            key = self._pending[0].key  # the oldest request's key goes first
            # Give concurrent callers a moment to join the batch.
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(self._same_key(key)) < self._enough() and loop.time() < deadline:
                await asyncio.sleep(min(0.001, max(0.0, deadline - loop.time())))
            batch = self._same_key(key)
            taken = {id(r) for r in batch}
            self._pending = [r for r in self._pending if id(r) not in taken]
            if self._pending:
                self._wake.set()
            started = loop.time()
            try:
                chunks = await loop.run_in_executor(self._thread, self.policy.act, [r.observation for r in batch])
                if len(chunks) != len(batch):
                    raise RuntimeError(f"policy returned {len(chunks)} chunks for {len(batch)} observations")
            except Exception as e:  # every caller of the batch gets the error, recorded per episode
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
            else:
                infer_ms = (loop.time() - started) * 1000
                for r, chunk in zip(batch, chunks):
                    if not r.future.done():
                        r.future.set_result((chunk, BatchTiming(round((started - r.queued_at) * 1000, 3),
                                                                round(infer_ms, 3), len(batch))))
            self.stats.busy_s += loop.time() - started
            self.stats.batch_sizes.append(len(batch))
