"""Chunk-execution rules: how a predicted action chunk (T x D) turns into env steps.

- ``all``: execute the whole chunk open loop, then query again (NORA's published LIBERO script).
- ``first``: execute the first action, then query again (NORA's published WidowX script).
- ``first:K``: execute the first K actions, then query again.
- ``ensemble`` / ``ensemble:M``: query every step and average the actions predicted for the
  current step by all chunks still covering it, with ACT's exponential weights
  ``w_i = exp(-M * i)`` (i = 0 for the oldest prediction; M defaults to 0.01).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from nora_bench import UserError

RULE_HELP = "use one of: all, first, first:K (K >= 1), ensemble, ensemble:M (M >= 0)"


@dataclass(frozen=True)
class ChunkRule:
    kind: str  # "all" | "first" | "ensemble"
    k: int = 0  # actions per query for "first"
    m: float = 0.01  # ensemble weight decay

    @classmethod
    def parse(cls, text: str) -> "ChunkRule":
        name, _, arg = str(text).strip().partition(":")
        try:
            if name == "all" and not arg:
                return cls("all")
            if name == "first":
                k = int(arg) if arg else 1
                if k >= 1:
                    return cls("first", k=k)
            if name == "ensemble":
                m = float(arg) if arg else 0.01
                if m >= 0 and math.isfinite(m):
                    return cls("ensemble", m=m)
        except ValueError:
            pass
        raise UserError(f"unknown chunk-execution rule {text!r}: {RULE_HELP}")

    def __str__(self) -> str:
        if self.kind == "first":
            return "first" if self.k == 1 else f"first:{self.k}"
        if self.kind == "ensemble":
            return "ensemble" if self.m == 0.01 else f"ensemble:{self.m:g}"
        return "all"

    def executor(self) -> "ChunkExecutor":
        return ChunkExecutor(self)


class ChunkExecutor:
    """Per-episode state of a rule: `needs_query()`, `push(chunk)` after a query, `pop()` per step."""

    def __init__(self, rule: ChunkRule):
        self.rule = rule
        self._queue: deque[np.ndarray] = deque()
        # ensemble: (chunk, index of the chunk's row for the next step)
        self._live: list[list] = []

    def needs_query(self) -> bool:
        if self.rule.kind == "ensemble":
            return True
        return not self._queue

    def push(self, chunk: np.ndarray) -> None:
        if self.rule.kind == "ensemble":
            self._live.append([chunk, 0])
        elif self.rule.kind == "first":
            self._queue.extend(chunk[: self.rule.k])
        else:
            self._queue.extend(chunk)

    def pop(self) -> np.ndarray:
        if self.rule.kind != "ensemble":
            return self._queue.popleft()
        self._live = [c for c in self._live if c[1] < len(c[0])]
        preds = np.stack([c[0][c[1]] for c in self._live])
        weights = np.exp(-self.rule.m * np.arange(len(preds)))
        action = (weights[:, None] * preds).sum(0) / weights.sum()
        for c in self._live:
            c[1] += 1
        return action
