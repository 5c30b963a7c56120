"""The anytime-valid statistics (nora_bench/sequential.py) driven by simulated Bernoulli outcomes: no
simulator, thousands of seeded runs in seconds. Coverage is checked at every time at once (which
implies coverage at any stopping time) and at the time a `halfwidth<=h` rule stops; the same checks
fail for a Wilson interval re-checked after every episode and for a McNemar test re-run after every
pair, so they can tell a valid rule from an invalid one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nora_bench.results import wilson_interval
from nora_bench.sequential import BettingWoRCS, HypergeometricCS, SignTest, sign_test, stratified_order, suite_cs, task_cs

ALPHA = 0.05


def slack(runs: int) -> float:
    """Three Monte Carlo standard errors of an error rate of ALPHA over `runs` runs."""
    return 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)


def test_stratified_order_advances_every_task_at_the_same_pace():
    strata = {t: [(t, i) for i in range(50)] for t in range(10)}
    order = stratified_order(strata, seed=3)
    assert sorted(order) == sorted(x for v in strata.values() for x in v)
    for r in range(50):  # round r holds one init state of every task
        assert sorted(t for t, _ in order[10 * r:10 * r + 10]) == list(range(10))
    assert order == stratified_order(strata, seed=3)
    assert order != stratified_order(strata, seed=4)
    trials = [i for t, i in order if t == 0]
    assert trials != sorted(trials)  # init states are shuffled, not run 0, 1, 2, ...
    uneven = stratified_order({0: [1, 2, 3], 1: [4]}, seed=0)
    assert sorted(uneven) == [1, 2, 3, 4] and set(uneven[:2]) & {4}


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_task_interval_covers_the_full_run_rate_at_every_time(rate):
    runs, m = 1500, 50
    rng = np.random.default_rng(int(rate * 100))
    x = rng.random((runs, m)) < rate
    truth = x.mean(axis=1)  # what all 50 init states give
    cs = HypergeometricCS(m, ALPHA, runs)
    missed, stopped, missed_at_stop = np.zeros(runs, bool), np.zeros(runs, bool), np.zeros(runs, bool)
    for t in range(m):
        cs.update(x[:, t])
        lo, hi = cs.interval()
        out = (truth < lo - 1e-9) | (truth > hi + 1e-9)
        missed |= out
        stop = ~stopped & ((hi - lo) / 2 <= 0.1)
        missed_at_stop |= stop & out
        stopped |= stop
    assert missed.mean() <= ALPHA + slack(runs)
    assert missed_at_stop.mean() <= missed.mean()
    assert stopped.all()
    assert np.allclose(lo, truth) and np.allclose(hi, truth)  # all drawn: the interval is the point
    if rate in (0.0, 1.0):
        assert missed.sum() == 0


def suite_outcomes(rng, rates: np.ndarray, runs: int, m: int = 50) -> np.ndarray:
    """(runs, tasks, rounds): task k's outcome at round r (its r-th init state in the random order)."""
    return rng.random((runs, rates.size, m)) < rates[None, :, None]


RATES = {
    "all fail": np.zeros(10),
    "all succeed": np.ones(10),
    "half": np.full(10, 0.5),
    "high": np.full(10, 0.95),
    "tasks 0 or 1": np.array([0.0, 1.0] * 5),
    "like a VLA": np.array([0.98, 0.2, 0.9, 0.85, 1.0, 0.55, 0.95, 0.7, 0.6, 0.0]),
}


@pytest.mark.parametrize("name", list(RATES))
def test_suite_interval_covers_the_full_run_rate_at_every_time(name):
    rates, runs, m = RATES[name], 400, 50
    x = suite_outcomes(np.random.default_rng(len(name)), rates, runs, m)
    truth = x.mean(axis=(1, 2))
    cs = BettingWoRCS(m, rates.size, ALPHA, runs)
    missed, stop_round = np.zeros(runs, bool), np.full(runs, m)
    missed_at_stop = np.zeros(runs, bool)
    for r in range(m):
        cs.update(x[:, :, r].sum(axis=1))
        lo, hi = cs.interval()
        out = (truth < lo - 1e-9) | (truth > hi + 1e-9)
        missed |= out
        stop = (stop_round == m) & ((hi - lo) / 2 <= 0.03)
        missed_at_stop |= stop & out
        stop_round[stop] = r + 1
    assert missed.mean() <= ALPHA + slack(runs)
    assert missed_at_stop.mean() <= missed.mean()
    assert np.allclose(lo, truth) and np.allclose(hi, truth)
    if name in ("all fail", "all succeed"):
        assert missed.sum() == 0 and stop_round.max() < 20  # a certain outcome is found out early


def test_wilson_rechecked_after_every_episode_fails_the_same_check():
    """The same time-uniform check on a 95% Wilson interval re-computed after every episode: it
    excludes the true rate at some point in far more than 5% of runs, so a rule that stops on it
    (narrow enough, or excludes a value) has no 95% guarantee. The confidence sequence passes it."""
    runs, n_max, p = 2000, 500, 0.9
    x = np.random.default_rng(0).random((runs, n_max)) < p
    n = np.arange(1, n_max + 1)
    k = np.cumsum(x, axis=1)
    z = 1.959963984540054
    centre = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt((k / n) * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = centre - half, centre + half
    assert np.allclose((lo[0, 99], hi[0, 99]), wilson_interval(int(k[0, 99]), 100))
    missed = ((p < lo) | (p > hi))[:, 9:].any(axis=1)  # from the 10th episode on
    assert missed.mean() > 2 * ALPHA


def paired(rng, rates_a: np.ndarray, delta: float, rho: float, runs: int, m: int = 50):
    """Outcomes of two policies on the same episodes; rho: how much a hard init state is hard for both."""
    rates_b = np.clip(rates_a + delta, 0, 1)
    z = rng.standard_normal((runs, rates_a.size, m)) * math.sqrt(rho)
    a = z + rng.standard_normal(z.shape) * math.sqrt(1 - rho) < stats.norm.ppf(rates_a)[None, :, None]
    b = z + rng.standard_normal(z.shape) * math.sqrt(1 - rho) < stats.norm.ppf(rates_b)[None, :, None]
    # stratified order: round by round
    return a.transpose(0, 2, 1).reshape(runs, -1), b.transpose(0, 2, 1).reshape(runs, -1)


@pytest.mark.parametrize("rates,rho", [(np.full(10, 0.5), 0.0), (RATES["like a VLA"], 0.0),
                                       (RATES["like a VLA"], 0.6), (np.array([0.0, 1.0] * 5), 0.0)])
def test_sign_test_type_one_error_under_the_null(rates, rho):
    runs = 3000
    a, b = paired(np.random.default_rng(int(rho * 10) + rates.size), rates, 0.0, rho, runs)
    test = SignTest(ALPHA, runs)
    naive_rejected = np.zeros(runs, bool)
    for i in range(a.shape[1]):
        test.update(b[:, i].astype(int) - a[:, i].astype(int))
        if i % 10 == 9:  # McNemar's fixed-n test re-run after every round: invalid
            bo, d = test.s, test.d
            z = np.where(d > 0, np.abs(2 * bo - d) / np.sqrt(np.maximum(d, 1)), 0)
            naive_rejected |= z > 1.959964
    assert (test.decision != 0).mean() <= ALPHA + slack(runs)
    assert (test.p_value() <= ALPHA).mean() <= ALPHA + slack(runs)
    if rates.min() < 1 and not set(rates) <= {0.0, 1.0}:
        assert naive_rejected.mean() > 2 * ALPHA  # peeking at McNemar inflates its error


def test_sign_test_decides_a_ten_point_difference_early_and_the_right_way():
    runs = 2000
    a, b = paired(np.random.default_rng(5), RATES["like a VLA"] * 0.85, 0.10, 0.5, runs)
    test, used = SignTest(ALPHA, runs), np.full(runs, a.shape[1])
    for i in range(a.shape[1]):
        test.update(b[:, i].astype(int) - a[:, i].astype(int))
        used[(test.decision != 0) & (used == a.shape[1])] = i + 1
    assert (test.decision == 1).mean() > 0.8
    assert (test.decision == -1).mean() <= ALPHA / 2
    assert used.mean() < 0.7 * a.shape[1]


def test_whole_sequence_helpers_agree_with_the_batched_classes():
    rng = np.random.default_rng(9)
    x = rng.random(50) < 0.7
    cs = HypergeometricCS(50, ALPHA)
    for v in x[:30]:
        cs.update([v])
    got = task_cs(list(x[:30]), 50)
    assert (got.low, got.high, got.n) == (cs.interval()[0][0], cs.interval()[1][0], 30)
    assert got.low <= x[:30].mean() <= got.high and got.halfwidth > 0
    rounds = [int(s) for s in rng.binomial(10, 0.8, size=20)]
    s = suite_cs(rounds, 50, 10)
    assert s.n == 200 and s.low <= sum(rounds) / 200 <= s.high
    r = sign_test([1] * 30 + [0] * 5)
    assert r.decision == 1 and r.b_only == 30 and r.a_only == 0 and 0 < r.decided_after <= 30
    assert r.p_value <= ALPHA and r.e_value >= 1 / ALPHA
    none = sign_test([1, -1] * 40)
    assert none.decision == 0 and none.decided_after == -1 and none.p_value > ALPHA
    with pytest.raises(ValueError):
        HypergeometricCS(2).update([1]) or None
        c = HypergeometricCS(1)
        c.update([1])
        c.update([1])
