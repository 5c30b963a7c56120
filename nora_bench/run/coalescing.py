"""Several envs per Ray env worker: their concurrent policy queries leave the worker as ONE actor call.

Ray's per-call cost (submit, serialise, the actor's event-loop wake-up) is what caps the harness at a
few hundred queries/s with one env per worker (docs/performance.md). A worker that runs K episodes on
K threads gathers their queries here and sends them together: K queries, one call. The answers travel
back as plain tuples (numpy array, list, str, dict), not pickled `ActionChunk` dataclasses.

Go rule: one call in flight per worker; while it is out, queries gather. With none out, the pending
queries leave as soon as every open episode of the worker is waiting (no more can come), else when the
oldest has waited `max_wait_ms` (an episode still stepping a slow env does not hold the others back
for long). Why not a call per arrival while others are out: the episodes then drift out of phase and
each ends up in a call of its own, which is the per-call cost this is here to remove.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from nora_bench.types import ActionChunk, Observation


def chunk_to_wire(chunk: ActionChunk) -> tuple:
    """An ActionChunk as plain data (what Ray serialises cheapest)."""
    return (chunk.actions, chunk.failures, chunk.stop, chunk.info)


def chunk_from_wire(item: tuple) -> ActionChunk:
    actions, failures, stop, info = item
    return ActionChunk(actions, list(failures), stop, dict(info))


@dataclass
class _Query:
    observation: Observation
    queued_at: float
    answer: object = None
    done: bool = False


@dataclass
class CoalesceStats:
    calls: int = 0
    queries: int = 0


class QueryCoalescer:
    """Gathers the queries of a worker's concurrent episodes into one `send(observations)` call.

    `send` takes a list of observations and returns one answer per observation (an ActionChunk or an
    exception instance, which is raised in that query's caller only)."""

    def __init__(self, send, max_wait_ms: float = 2.0):
        self.send = send
        self.max_wait_s = max_wait_ms / 1000
        self.cond = threading.Condition()
        self.open = 0  # episodes between start() and end()
        self.in_flight = False  # a call is out
        self.pending: list[_Query] = []
        self.stats = CoalesceStats()

    def start(self) -> None:
        with self.cond:
            self.open += 1

    def end(self) -> None:
        with self.cond:
            self.open -= 1
            self.cond.notify_all()  # the others may all be waiting now

    def act(self, observation: Observation):
        query = _Query(observation, time.monotonic())
        with self.cond:
            self.pending.append(query)
            self.cond.notify_all()
            while True:
                if query.done:
                    break
                batch = self._take()
                if batch:
                    self.cond.release()
                    try:
                        self._send(batch)
                    finally:
                        self.cond.acquire()
                    self.cond.notify_all()
                    continue
                timeout = (self.pending[0].queued_at + self.max_wait_s - time.monotonic()
                           if self.pending and not self.in_flight else None)
                self.cond.wait(timeout if timeout is None or timeout > 0 else 0)
        if isinstance(query.answer, BaseException):
            raise query.answer
        return query.answer

    def _take(self) -> list[_Query]:
        """The pending queries, if the go rule says they leave now (called holding the lock)."""
        if not self.pending or self.in_flight:
            return []
        if len(self.pending) >= self.open or time.monotonic() - self.pending[0].queued_at >= self.max_wait_s:
            batch, self.pending, self.in_flight = self.pending, [], True
            return batch
        return []

    def _send(self, batch: list[_Query]) -> None:
        try:
            answers = self.send([q.observation for q in batch])
        except BaseException as e:  # the call failed: every query of it gets the error
            answers = [e] * len(batch)
        with self.cond:
            self.in_flight = False
            # Queries that came while the call was out wait `max_wait_ms` from now for the episodes just
            # answered (a fast env's are back in well under it): out-of-phase episodes merge again.
            now = time.monotonic()
            for q in self.pending:
                q.queued_at = max(q.queued_at, now)
            self.stats.calls += 1
            self.stats.queries += len(batch)
            for q, a in zip(batch, answers):
                q.answer, q.done = a, True
