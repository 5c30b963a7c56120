"""Anytime-valid statistics for deciding with fewer episodes (numpy/scipy only, nothing of ours).

A run's episodes are a finite population: every (task, init state) pair of the configured tasks and
trials. Episodes are scheduled in a random order fixed before the run (see `stratified_order`), so
every prefix of the run is a random sample drawn without replacement (WoR). The rate an interval
covers is the one the complete run would measure (every configured episode, each with the outcome it
gets in this run): stopping early costs nothing against the full evaluation but the interval's width.
Three tools, each valid under continuous monitoring (look after every episode, stop on any rule):

* `HypergeometricCS`: one task's success rate (binary outcomes, simple random sampling WoR from its
  M init states). The prior-posterior-ratio (PPR) confidence sequence of Waudby-Smith & Ramdas,
  "Confidence sequences for sampling without replacement", NeurIPS 2020, arXiv:2006.04347, section 3:
  with a prior pi_0 on the number of successes n+ in the population and the posterior pi_t after t
  draws, R_t(n) = pi_0(n) / pi_t(n) is a nonnegative martingale with R_0 = 1 at the true n+, so by
  Ville's inequality C_t = {n : R_t(n) < 1/alpha} covers n+ at every t at once with probability
  >= 1 - alpha. Here pi_0 is beta-binomial(M, a, b) and the likelihood hypergeometric:
      pi_t(n) proportional to pi_0(n) * C(n, s_t) C(M - n, t - s_t),
      R_t(n)  = sum_m pi_0(m) L_t(m) / L_t(n),   L_t(n) = C(n, s_t) C(M - n, t - s_t) / C(M, t).

* `BettingWoRCS`: a suite's success rate. Its episodes run in rounds that take one init state of
  every task (`stratified_order`), so the suite is a stratified sample, not a simple random one. By
  betting (Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B
  2024, arXiv:2010.09686, sections 4-6; the WoR centring is 2006.04347's): with N = K M episodes
  (K tasks, M init states each) and S the successes before round r (n = K (r - 1) episodes),
      m_r(mu) = (N mu - S) / (N - n)                   (the rate of what is left, if the rate is mu)
      K_r^+/- = prod_{rounds} prod_{k<=K} (1 +/- lambda^+/- (x_k - m_r(mu)))   (capital against mu)
      K_r     = max(K_r^+, K_r^-) / 2,   C_r = {mu : K_r(mu) < 1/alpha}, intersected over rounds,
  with the predictable plug-in bet lambda = sqrt(2 log(2/alpha) / (sigma2 t log(1 + t))), t = n + 1,
  truncated at 1/2 / m_r (resp. 1/2 / (1 - m_r)), sigma2 = (1/4 + sum (x_i - mu_i)^2) / t and mu_i the
  running mean (1/2 + sum x) / (i + 1) (2010.09686's predictable plug-in). Given the past rounds, the K
  outcomes of a round are independent with means q_k (each task's remaining rate) averaging m_r(mu),
  and one bet for the whole round keeps the capital a supermartingale: prod_k (1 + lambda (q_k - m_r))
  <= 1 by the AM-GM inequality. Ville's inequality then gives P(exists r: mu outside C_r) <= alpha.

* `SignTest`: a sequential paired test on discordant pairs (same episode, one policy succeeds and the
  other fails). Null: on every pair the two policies are exchangeable (McNemar's null), so the sign of
  each discordant pair is a fair coin, independent of the others whatever the order. The e-process is
  the mixture likelihood ratio (Robbins' method of mixtures; with a = 1/2 the Krichevsky-Trofimov
  mixture) of Bernoulli(p) against Bernoulli(1/2) over the d discordant signs with S positive ones:
      E_d = integral prod (2p)^{x}(2(1-p))^{1-x} dBeta(p; a, a) = 2^d B(S + a, d - S + a) / B(a, a),
  a nonnegative martingale under the null with E_0 = 1: rejecting when E_d >= 1/alpha has type-I
  error <= alpha under any stopping rule (Ville), and 1 / max_{j<=d} E_j is an anytime-valid p-value.
  The symmetric prior makes it two-sided; its direction is the sign of S - d/2 at the decision.

Everything is vectorised over a leading batch axis so that the simulation tests and the benchmark run
thousands of runs in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.05
SIGN_PRIOR = 4.0  # Beta(a, a) mixture for the sign test; see bench/bench_sequential.py for the choice


def stratified_order(strata: dict, seed: int) -> list:
    """A seeded random order of the items of `strata` ({stratum: [items]}) that advances every stratum
    at the same pace: round r takes the r-th item of each stratum's own random permutation, strata in
    a fresh random order every round. A stratum with fewer items drops out when it runs out."""
    rng = np.random.default_rng([seed, 0x5EC0])
    perms = {k: [items[i] for i in rng.permutation(len(items))] for k, items in strata.items()}
    keys = list(strata)
    out = []
    for r in range(max((len(v) for v in perms.values()), default=0)):
        for j in rng.permutation(len(keys)):
            if r < len(perms[keys[j]]):
                out.append(perms[keys[j]][r])
    return out


class HypergeometricCS:
    """PPR confidence sequence for the success count of a population of M binary outcomes drawn WoR
    (batch of independent sequences). `interval()` is the running intersection, as rates."""

    def __init__(self, population: int, alpha: float = DEFAULT_ALPHA, batch: int = 1, prior: tuple = (1.0, 1.0)):
        self.M, self.alpha = int(population), float(alpha)
        self.n = np.arange(self.M + 1)
        from scipy import stats  # here, not at import: `nora-bench run` answers bad input at once

        self.log_prior = stats.betabinom.logpmf(self.n, self.M, *prior)
        self.t = 0
        self.s = np.zeros(batch, dtype=int)
        self.lo = np.zeros(batch)
        self.hi = np.ones(batch)

    def update(self, x) -> None:
        """One more draw per sequence (bool/0-1 array of the batch's size)."""
        if self.t >= self.M:
            raise ValueError(f"all {self.M} items of the population were drawn already")
        self.t += 1
        self.s = self.s + np.asarray(x, dtype=int)
        from scipy import special, stats

        log_lik = stats.hypergeom.logpmf(self.s[:, None], self.M, self.n[None, :], self.t)  # (B, M+1)
        log_evidence = special.logsumexp(self.log_prior[None, :] + log_lik, axis=1)
        # R_t(n) < 1/alpha  <=>  log L_t(n) > log sum_m pi_0(m) L_t(m) + log alpha
        inside = log_lik > (log_evidence + math.log(self.alpha))[:, None]
        first = np.argmax(inside, axis=1)
        last = self.M - np.argmax(inside[:, ::-1], axis=1)
        lo, hi = np.maximum(self.lo, first / self.M), np.minimum(self.hi, last / self.M)
        # An empty intersection means the sequence has already missed (an alpha event): report the
        # current interval rather than an inverted one.
        empty = lo > hi
        self.lo, self.hi = np.where(empty, first / self.M, lo), np.where(empty, last / self.M, hi)

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo.copy(), self.hi.copy()


class BettingWoRCS:
    """Betting confidence sequence for the success rate of a stratified population (batch of
    independent sequences): M rounds, each one binary outcome from each of K strata, drawn WoR within
    each stratum. `grid`: candidate rates (default: the attainable ones, j / (K M))."""

    TRUNC = 0.5

    def __init__(self, rounds: int, strata: int = 1, alpha: float = DEFAULT_ALPHA, batch: int = 1,
                 grid: np.ndarray | None = None):
        self.M, self.K, self.alpha = int(rounds), int(strata), float(alpha)
        self.N = self.M * self.K
        self.grid = np.arange(self.N + 1) / self.N if grid is None else np.asarray(grid, dtype=float)
        self.r = 0
        self.sum = np.zeros(batch)  # successes so far
        self.sq = np.full(batch, 0.25)  # 1/4 + sum over episodes of (x_i - mu_i)^2
        self.log_kp = np.zeros((batch, self.grid.size))
        self.log_km = np.zeros((batch, self.grid.size))
        self.out = np.zeros((batch, self.grid.size), dtype=bool)  # refuted candidates (running intersection)
        self.now_out = self.out.copy()  # refuted by the current capital and bounds alone
        self.logical_out = self.out.copy()  # outside the logical bounds
        self.threshold = math.log(2 / self.alpha)  # max(K+, K-) / 2 >= 1/alpha

    def update(self, successes) -> None:
        """One complete round per sequence: how many of its K episodes succeeded."""
        s = np.asarray(successes, dtype=float)
        if self.r >= self.M:
            raise ValueError(f"all {self.M} rounds of the population were drawn already")
        n = self.r * self.K  # episodes before this round
        self.r += 1
        m = (self.N * self.grid[None, :] - self.sum[:, None]) / (self.N - n)  # m_r(candidate)
        impossible = (m < -1e-12) | (m > 1 + 1e-12)
        m = np.clip(m, 0.0, 1.0)
        t = n + 1
        sigma2 = self.sq / t
        lam = np.sqrt(2 * math.log(2 / self.alpha) / (sigma2 * t * math.log(1 + t)))[:, None]
        with np.errstate(divide="ignore"):
            lam_p = np.minimum(lam, self.TRUNC / m)
            lam_m = np.minimum(lam, self.TRUNC / (1 - m))
        # One common bet for the round's K outcomes: prod_k (1 + lam (x_k - m_r)). Given the past, the K
        # outcomes are independent with means q_k averaging m_r, and by the AM-GM inequality
        # prod_k (1 + lam (q_k - m_r)) <= 1: the capital stays a nonnegative supermartingale.
        f = self.K - s[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_kp += s[:, None] * np.log1p(lam_p * (1 - m)) + f * np.log1p(-lam_p * m)
            self.log_km += s[:, None] * np.log1p(-lam_m * (1 - m)) + f * np.log1p(lam_m * m)
        # A remaining rate of 0 (1) cannot produce a success (failure): the candidate is refuted.
        impossible |= ((m <= 0) & (s[:, None] > 0)) | ((m >= 1) & (f > 0))
        log_k = np.maximum(self.log_kp, self.log_km)
        self.now_out = impossible | (np.nan_to_num(log_k, nan=np.inf) >= self.threshold)
        self.out |= self.now_out
        # The plug-in variance, episode by episode, with the running mean after each.
        for j in range(self.K):
            x = (j < s).astype(float)
            mu = (0.5 + self.sum + np.minimum(s, j + 1)) / (n + j + 2)
            self.sq = self.sq + (x - mu) ** 2
        self.sum = self.sum + s
        # Whatever is left, the rate lies in [sum / N, (sum + N - n - K) / N] (the logical bounds).
        left = self.N - n - self.K
        logical = (self.grid[None, :] < (self.sum / self.N)[:, None] - 1e-12) | \
                  (self.grid[None, :] > ((self.sum + left) / self.N)[:, None] + 1e-12)
        self.out |= logical
        self.now_out |= logical
        self.logical_out = logical

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        inside = ~self.out
        # An empty intersection means the sequence has already missed (an alpha event): report the
        # current set rather than nothing.
        inside = np.where(inside.any(axis=1)[:, None], inside, ~self.now_out)
        inside = np.where(inside.any(axis=1)[:, None], inside, ~self.logical_out)
        anyin = inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        last = self.grid.size - 1 - np.argmax(inside[:, ::-1], axis=1)
        return np.where(anyin, self.grid[first], np.nan), np.where(anyin, self.grid[last], np.nan)


class SignTest:
    """Mixture e-process on the signs of discordant pairs (batch of independent sequences)."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, batch: int = 1, prior: float = SIGN_PRIOR):
        self.alpha, self.a = float(alpha), float(prior)
        self.d = np.zeros(batch, dtype=int)  # discordant pairs seen
        self.s = np.zeros(batch, dtype=int)  # ... won by the second policy (B)
        self.max_log_e = np.zeros(batch)
        self.decision = np.zeros(batch, dtype=int)  # +1 B better, -1 A better, 0 undecided
        self.decided_at = np.full(batch, -1)  # discordant count at the decision

    def log_e(self) -> np.ndarray:
        return sign_log_e(self.s, self.d, self.a)

    def update(self, sign) -> None:
        """sign: +1 (only B succeeded), -1 (only A), 0 (concordant: no information)."""
        sign = np.asarray(sign, dtype=int)
        disc = sign != 0
        self.d = self.d + disc
        self.s = self.s + (sign > 0)
        log_e = self.log_e()
        self.max_log_e = np.maximum(self.max_log_e, log_e)
        new = (self.decision == 0) & (log_e >= math.log(1 / self.alpha))
        self.decision = np.where(new, np.where(2 * self.s > self.d, 1, -1), self.decision)
        self.decided_at = np.where(new, self.d, self.decided_at)

    def p_value(self) -> np.ndarray:
        """Anytime-valid p-value: 1 / the largest e-value seen so far."""
        return np.minimum(1.0, np.exp(-self.max_log_e))


def sign_log_e(s, d, a: float = SIGN_PRIOR):
    """log E_d of the Beta(a, a) mixture against fair signs, S = s positives among d discordant pairs."""
    s, d = np.asarray(s, dtype=float), np.asarray(d, dtype=float)
    from scipy import special

    return d * math.log(2) + special.betaln(s + a, d - s + a) - special.betaln(a, a)


# -- whole sequences (for reports: recorded outcomes in their recorded order) -----------------------

@dataclass
class Interval:
    low: float
    high: float
    n: int  # draws used

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2


def task_cs(outcomes: list[bool], population: int, alpha: float = DEFAULT_ALPHA) -> Interval:
    """The PPR CS of one task after `outcomes` (in their order of draw)."""
    cs = HypergeometricCS(population, alpha)
    for x in outcomes[:population]:
        cs.update([bool(x)])
    lo, hi = cs.interval()
    return Interval(float(lo[0]), float(hi[0]), min(len(outcomes), population))


def suite_cs(round_successes: list[int], rounds: int, strata: int, alpha: float = DEFAULT_ALPHA) -> Interval:
    """The betting WoR CS of a stratified suite after its complete rounds (successes per round)."""
    cs = BettingWoRCS(rounds, strata, alpha)
    for s in round_successes[:rounds]:
        cs.update([s])
    lo, hi = cs.interval()
    return Interval(float(lo[0]), float(hi[0]), len(round_successes[:rounds]) * strata)


@dataclass
class SignResult:
    b_only: int
    a_only: int
    e_value: float  # at the end
    p_value: float  # anytime-valid: 1 / max e-value along the sequence
    decision: int  # +1 B better, -1 A better, 0 undecided (at alpha)
    decided_after: int  # pairs (in order) consumed when it decided; -1 if undecided


def sign_test(signs: list[int], alpha: float = DEFAULT_ALPHA, prior: float = SIGN_PRIOR) -> SignResult:
    """The sequential sign test over paired outcomes in their order (+1 only B, -1 only A, 0 equal)."""
    test, decided_after = SignTest(alpha, 1, prior), -1
    for i, s in enumerate(signs):
        test.update([s])
        if decided_after < 0 and test.decision[0] != 0:
            decided_after = i + 1
    return SignResult(int(test.s[0]), int(test.d[0] - test.s[0]), float(np.exp(test.log_e()[0])),
                      float(test.p_value()[0]), int(test.decision[0]), decided_after)
