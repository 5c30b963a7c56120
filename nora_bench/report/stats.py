"""Significance tests for comparing success rates (scipy.stats underneath).

The Wilson interval lives in `nora_bench.results`.
"""

from __future__ import annotations

import math

from scipy import stats


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of k1/n1 vs k2/n2 (NaN when a side has no episode)."""
    if n1 == 0 or n2 == 0:
        return math.nan
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact McNemar test on paired outcomes: episodes won only by A vs only by B (same init states).

    1.0 when no pair disagrees (no evidence of a difference).
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(stats.binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count as tests)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
