"""The one batching loop (nora_bench/batching.py) that the Ray policy actor and `nora-bench serve`
share: batches fill from concurrent callers, a policy's `batch_key` splits them, errors reach
every caller of a batch, episode calls run on the policy's thread in order with the batches."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from nora_bench.batching import Batcher, BatchOptions


@dataclass
class Obs:
    instruction: str
    episode: str = ""


class ToyPolicy:
    """Answers each observation with its instruction; records every batch and the thread it ran on."""

    def __init__(self, key_by_prompt_length: bool = False, fail: bool = False):
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.fail = fail
        if key_by_prompt_length:  # what NORA's batch_key is: equal prompt lengths batch together
            self.batch_key = lambda obs: len(obs.instruction)

    def start_episode(self, info) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append([f"start {info}"])

    def act(self, observations):
        self.threads.add(threading.get_ident())
        if self.fail:
            raise RuntimeError("model on fire")
        self.batches.append([o.instruction for o in observations])
        return [f"chunk for {o.instruction}" for o in observations]


def submit_all(policy, prompts, options, callers=None):
    async def main():
        batcher = Batcher(policy, options, callers=callers)
        try:
            # All submitted before the batching loop first runs: the grouping is deterministic.
            return await asyncio.gather(*(batcher.submit(Obs(p)) for p in prompts), return_exceptions=True)
        finally:
            batcher.close()

    return asyncio.run(main())


def test_batch_key_groups_requests_oldest_key_first():
    policy = ToyPolicy(key_by_prompt_length=True)
    prompts = ["aa", "bbb", "cc", "ddd", "ee", "fff", "gg"]
    results = submit_all(policy, prompts, BatchOptions(max_batch_size=3, max_wait_ms=50))
    assert policy.batches == [["aa", "cc", "ee"], ["bbb", "ddd", "fff"], ["gg"]]
    for prompt, (chunk, timing) in zip(prompts, results):
        assert chunk == f"chunk for {prompt}"
        assert timing.batch_size == (1 if prompt == "gg" else 3) and timing.infer_ms >= 0 and timing.queue_ms >= 0


def test_without_a_key_batches_fill_up_to_the_limit():
    policy = ToyPolicy()
    submit_all(policy, [f"p{i}" for i in range(6)], BatchOptions(max_batch_size=4, max_wait_ms=50))
    assert [len(b) for b in policy.batches] == [4, 2]


def test_an_error_reaches_every_caller_of_the_batch():
    out = submit_all(ToyPolicy(fail=True), ["a", "b", "c"], BatchOptions(max_batch_size=4, max_wait_ms=50))
    assert all(isinstance(e, RuntimeError) and "model on fire" in str(e) for e in out)


def test_episode_calls_run_on_the_policy_thread_between_batches():
    policy = ToyPolicy()

    async def main():
        batcher = Batcher(policy, BatchOptions(max_batch_size=2, max_wait_ms=50))
        await batcher.call(policy.start_episode, "ep1")
        out = await asyncio.gather(batcher.submit(Obs("x")), batcher.submit(Obs("y")))
        batcher.close()
        return out

    asyncio.run(main())
    assert policy.batches == [["start ep1"], ["x", "y"]]
    assert len(policy.threads) == 1 and threading.get_ident() not in policy.threads


def test_options_are_checked():
    with pytest.raises(ValueError):
        Batcher(ToyPolicy(), BatchOptions(max_batch_size=0))


def test_a_batch_holding_every_caller_goes_without_waiting():
    """With `callers()` (the open episodes), a lone caller is never held for max_wait_ms: here the
    wait would be 10 minutes, and the answer comes at once."""
    policy = ToyPolicy()

    async def main():
        batcher = Batcher(policy, BatchOptions(max_batch_size=8, max_wait_ms=600_000), callers=lambda: 1)
        try:
            return await asyncio.wait_for(batcher.submit(Obs("alone")), timeout=60)
        finally:
            batcher.close()

    chunk, timing = asyncio.run(main())
    assert chunk == "chunk for alone" and timing.batch_size == 1
