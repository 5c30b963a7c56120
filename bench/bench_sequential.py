"""Episodes saved by the anytime-valid stopping rules, on simulated policies (no simulator).

Per-task success rates are drawn like real VLA results on a LIBERO suite (10 tasks x 50 init states,
suite means of published OpenVLA/NORA-class results, a wide spread between tasks), outcomes are
Bernoulli, and a hard init state can be hard for both policies of a pair (rho). Printed side by side:

* `--until halfwidth<=0.03`: episodes used, coverage of the full run's rate at the stop, against the
  fixed 500 (whose 95% Wilson half-width is shown).
* `--versus --until decided` for a true difference of 0, 5 and 10 points: episodes used, decisions
  (and wrong-direction ones), against the fixed 500 with McNemar's exact test, and against the
  smallest fixed size whose McNemar power matches the sequential test's (the same error rates).
* What re-checking a fixed-n test after every round does to its error rate.

    python bench/bench_sequential.py [--runs 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from common import table  # noqa: F401  (sets sys.path to the checkout)
from scipy import stats

from nora_bench.sequential import BettingWoRCS, SignTest

TASKS, INITS, ALPHA = 10, 50, 0.05
N = TASKS * INITS
SUITE_MEANS = {"spatial-like 0.85": 0.85, "goal-like 0.78": 0.78, "long-like 0.55": 0.55, "expert-like 0.97": 0.97}


def task_rates(rng, mean: float, concentration: float = 4.0) -> np.ndarray:
    """Per-task rates around a suite mean with a spread like published per-task tables."""
    r = rng.beta(mean * concentration, (1 - mean) * concentration, TASKS)
    return np.clip(r + (mean - r.mean()), 0.0, 1.0)


def outcomes(rng, rates: np.ndarray, runs: int, latent: np.ndarray | None = None, rho: float = 0.0) -> np.ndarray:
    """(runs, rounds, tasks) outcomes; `latent`: the per-episode difficulty shared by a pair."""
    shape = (runs, INITS, TASKS)
    noise = rng.standard_normal(shape)
    z = noise if latent is None else math.sqrt(rho) * latent + math.sqrt(1 - rho) * noise
    return z < stats.norm.ppf(np.clip(rates, 1e-9, 1 - 1e-9))[None, None, :]


def estimation(rng, runs: int) -> list[tuple]:
    rows = []
    for name, mean in SUITE_MEANS.items():
        rates = task_rates(rng, mean)
        x = outcomes(rng, rates, runs)
        truth = x.mean(axis=(1, 2))
        cs = BettingWoRCS(INITS, TASKS, ALPHA, runs)
        stop = np.full(runs, INITS)
        covered_at_stop = np.ones(runs, bool)
        for r in range(INITS):
            cs.update(x[:, r, :].sum(axis=1))
            lo, hi = cs.interval()
            new = (stop == INITS) & ((hi - lo) / 2 <= 0.03)
            covered_at_stop[new] = (lo[new] - 1e-9 <= truth[new]) & (truth[new] <= hi[new] + 1e-9)
            stop[new] = r + 1
        used = stop * TASKS
        p = truth.mean()
        wilson_half = 1.959964 * math.sqrt(p * (1 - p) / N)
        rows.append((name, f"{used.mean():.0f}", f"{np.percentile(used, 90):.0f}", f"{100 * (1 - used.mean() / N):.0f}%",
                     f"{covered_at_stop.mean():.3f}", "500", f"{wilson_half:.3f}"))
    return rows


def mcnemar_power_by_prefix(signs: np.ndarray) -> np.ndarray:
    """Power of McNemar's exact two-sided test after each complete round (runs x rounds -> rounds)."""
    b = np.cumsum(signs > 0, axis=1)[:, TASKS - 1::TASKS]
    d = np.cumsum(signs != 0, axis=1)[:, TASKS - 1::TASKS]
    p = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(b, d, 0.5), stats.binom.sf(b - 1, d, 0.5)))
    p = np.where(d > 0, p, 1.0)
    return (p <= ALPHA).mean(axis=0)


def comparison(rng, runs: int) -> list[tuple]:
    rows = []
    for rho in (0.0, 0.5):
        for delta in (0.0, 0.05, 0.10):
            rates_a = task_rates(rng, 0.75)
            rates_b = np.clip(rates_a + delta, 0, 1)
            latent = rng.standard_normal((runs, INITS, TASKS))
            a = outcomes(rng, rates_a, runs, latent, rho).reshape(runs, -1)
            b = outcomes(rng, rates_b, runs, latent, rho).reshape(runs, -1)
            signs = b.astype(int) - a.astype(int)
            test, used = SignTest(ALPHA, runs), np.full(runs, N)
            for i in range(N):
                test.update(signs[:, i])
                used[(test.decision != 0) & (used == N)] = i + 1
            power = (test.decision != 0).mean()
            wrong = (test.decision == (-1 if delta > 0 else 0)).mean() if delta > 0 else (test.decision != 0).mean()
            by_prefix = mcnemar_power_by_prefix(signs)
            # The fixed design with the same power at the same alpha (no power to match without a difference).
            matched = next((TASKS * (j + 1) for j, pw in enumerate(by_prefix) if pw >= power), None) if delta else None
            fixed_power = by_prefix[-1]
            saved_500 = 1 - used.mean() / N
            saved_matched = (1 - used.mean() / matched) if matched else math.nan
            rows.append((f"{delta * 100:.0f} pts", f"{rho}", f"{used.mean():.0f}", f"{power:.3f}", f"{wrong:.3f}",
                         f"{fixed_power:.3f}", f"{100 * saved_500:.0f}%",
                         str(matched) if matched else ("-" if not delta else ">500"), "-" if math.isnan(saved_matched) else f"{100 * saved_matched:.0f}%"))
    return rows


def peeking(rng, runs: int) -> list[tuple]:
    """Error rates of fixed-n procedures re-checked after every round, beside the sequential ones."""
    rates = task_rates(rng, 0.75)
    latent = rng.standard_normal((runs, INITS, TASKS))
    a = outcomes(rng, rates, runs, latent, 0.3).reshape(runs, -1)
    b = outcomes(rng, rates, runs, latent, 0.3).reshape(runs, -1)
    signs = b.astype(int) - a.astype(int)
    bb = np.cumsum(signs > 0, axis=1)[:, TASKS - 1::TASKS]
    d = np.cumsum(signs != 0, axis=1)[:, TASKS - 1::TASKS]
    p = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(bb, d, 0.5), stats.binom.sf(bb - 1, d, 0.5)))
    naive_test = (np.where(d > 0, p, 1.0) <= ALPHA).any(axis=1).mean()
    test = SignTest(ALPHA, runs)
    for i in range(N):
        test.update(signs[:, i])
    x = a  # one policy's outcomes, round by round
    truth = x.mean(axis=1)
    n = np.arange(1, N + 1)
    k = np.cumsum(x, axis=1)
    z = 1.959963984540054
    centre = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt((k / n) * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The Wilson interval is about the Bernoulli rate; check it against the true mean rate.
    p_true = rates.mean()
    wilson_miss = (((p_true < centre - half) | (p_true > centre + half))[:, 9:]).any(axis=1).mean()
    cs = BettingWoRCS(INITS, TASKS, ALPHA, runs)
    missed = np.zeros(runs, bool)
    xr = x.reshape(runs, INITS, TASKS)
    for r in range(INITS):
        cs.update(xr[:, r, :].sum(axis=1))
        lo, hi = cs.interval()
        missed |= (truth < lo - 1e-9) | (truth > hi + 1e-9)
    return [("McNemar exact, re-run after every round (no difference)", f"{naive_test:.3f}",
             "sign-test e-process", f"{(test.decision != 0).mean():.3f}"),
            ("95% Wilson, re-checked after every episode: ever misses", f"{wilson_miss:.3f}",
             "confidence sequence: ever misses", f"{missed.mean():.3f}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000, help="simulated runs per case")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"# {TASKS} tasks x {INITS} init states = {N} episodes per suite; alpha {ALPHA}; {args.runs} simulated runs per row\n")
    print("## Estimate until precise: --until 'halfwidth<=0.03' (per suite) vs the fixed 500")
    table(estimation(rng, args.runs), ("suite (per-task rates like)", "episodes used (mean)", "p90", "saved",
                                       "coverage at stop", "fixed", "fixed: Wilson half-width"))
    print("\n## Compare until decided: --versus A --until decided vs the fixed 500 (McNemar exact), rate of A ~0.75")
    table(comparison(rng, args.runs), ("true diff", "rho", "episodes used (mean)", "decided", "wrong/false decisions",
                                       "fixed 500: power", "saved vs 500", "fixed n, same power", "saved vs that n"))
    print("\n## Re-checking a fixed-n procedure (no difference / the true rate), error rate at alpha 0.05")
    table(peeking(rng, args.runs), ("fixed-n procedure", "error", "anytime-valid", "error"))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
