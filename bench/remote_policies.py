"""Policies for bench_remote.py, importable by a `nora-bench serve` process as
`bench.remote_policies:FixedCostPolicy` (the repository root on PYTHONPATH)."""

from __future__ import annotations

import time

import numpy as np

from nora_bench.types import ActionChunk, Requirements


class FixedCostPolicy:
    """A constant 5-action chunk after `latency_s` per `act` call, whatever the batch size
    (what a GPU forward pass looks like to a server); it reads the image so the bytes are used."""

    def __init__(self, action_spec=None, latency_s: float = 0.0, cameras=("agentview",)):
        self.requirements = Requirements(cameras=tuple(cameras))
        self.latency_s = latency_s
        self.chunk = np.zeros((5, 7))
        self.chunk[:, 6] = -1.0

    def start_episode(self, info) -> None:
        pass

    def act(self, observations):
        if self.latency_s:
            time.sleep(self.latency_s)
        return [ActionChunk(self.chunk + 0 * float(o.images["agentview"][0, 0, 0])) for o in observations]

    def end_episode(self, key: str) -> None:
        pass
