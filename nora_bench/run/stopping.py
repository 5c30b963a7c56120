"""Stopping rules of a run (`--until`): stop scheduling once an anytime-valid interval is narrow enough
or a paired comparison has decided. The statistics are in `nora_bench.sequential`; this module feeds
them the run's outcomes in the run's recorded episode order and says when and why to stop.

Outcomes are consumed in the order fixed before the run, whatever order workers finish them in: the
rule looks at the longest finished prefix (per round for a suite, per task for `per task`, per pair
for `decided`). An episode recorded as `error` has no outcome: a round holding one does not count
until it is re-run (`--retry-errors`), and a pair holding one is skipped (it carries no sign).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from nora_bench import UserError
from nora_bench.sequential import DEFAULT_ALPHA, BettingWoRCS, HypergeometricCS, SignTest

LEVELS = ("suite", "task")
_HALFWIDTH = re.compile(r"^\s*halfwidth\s*<=\s*([0-9]*\.?[0-9]+)\s*(?:per\s+(suite|task))?\s*$")


@dataclass(frozen=True)
class StopRule:
    """A parsed `--until`: `halfwidth<=H [per suite|per task]` or `decided` (with `--versus`)."""

    text: str
    kind: str  # "halfwidth" | "decided"
    halfwidth: float = 0.0
    level: str = "suite"
    alpha: float = DEFAULT_ALPHA
    versus: str | None = None  # the baseline run folder of a paired comparison

    @classmethod
    def parse(cls, until: str | None, alpha: float = DEFAULT_ALPHA, versus: str | None = None) -> "StopRule | None":
        if not 0 < alpha < 0.5:
            raise UserError(f"--alpha {alpha} is out of range: use a level between 0 and 0.5, e.g. 0.05")
        if until is None:
            return cls("all", "all", alpha=alpha, versus=versus) if versus else None
        text = until.strip()
        if text == "decided":
            if not versus:
                raise UserError("--until decided compares against a baseline: add --versus RUN_DIR (a finished run)")
            return cls(text, "decided", alpha=alpha, versus=versus)
        m = _HALFWIDTH.match(text)
        if not m:
            raise UserError(f"cannot read --until {until!r}: use 'halfwidth<=0.03', 'halfwidth<=0.1 per task' or "
                            "'decided' (with --versus RUN_DIR)")
        h = float(m.group(1))
        if not 0 < h < 0.5:
            raise UserError(f"--until {until!r}: the half-width must be between 0 and 0.5 (a rate), e.g. 0.03")
        return cls(text, "halfwidth", halfwidth=h, level=m.group(2) or "suite", alpha=alpha, versus=versus)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StopRule":
        return cls(**{k: data[k] for k in ("text", "kind", "halfwidth", "level", "alpha", "versus") if k in data})

    def same_as(self, other: "StopRule") -> bool:
        return (self.kind, self.halfwidth, self.level, self.alpha) == (other.kind, other.halfwidth, other.level, other.alpha)


class Stopper:
    """Watches a run's outcomes in its recorded order and decides when to stop scheduling.

    `order`: the run's episode keys in order; `task_of`: key -> task id; `baseline`: key -> the
    baseline's outcome (True/False, None for an errored episode) for `decided`.
    """

    def __init__(self, rule: StopRule, order: list[str], task_of: dict[str, int], baseline: dict | None = None):
        self.rule, self.order, self.task_of = rule, list(order), task_of
        self.baseline = baseline or {}
        self.outcome: dict[str, bool | None] = {}
        self.tasks = list(dict.fromkeys(task_of[k] for k in self.order))
        self.status, self.reason, self.at = "running", "", None
        self.stopped_tasks: dict[int, dict] = {}
        if rule.kind == "halfwidth" and rule.level == "suite":
            per_task = {t: sum(1 for k in self.order if task_of[k] == t) for t in self.tasks}
            if len(set(per_task.values())) != 1:
                raise UserError("--until 'halfwidth<=...' per suite needs the same trials for every task")
            self.rounds, self.strata = next(iter(per_task.values())), len(self.tasks)
            self.cs = BettingWoRCS(self.rounds, self.strata, rule.alpha)
            self.next_round = 0
        elif rule.kind == "halfwidth":
            self.task_keys = {t: [k for k in self.order if task_of[k] == t] for t in self.tasks}
            self.task_cs = {t: HypergeometricCS(len(keys), rule.alpha) for t, keys in self.task_keys.items()}
            self.task_next = {t: 0 for t in self.tasks}
        else:
            self.test = SignTest(rule.alpha)
            self.next_pair = 0
        self.consumed = 0  # episodes (in order) the rule has used

    # -- feeding -----------------------------------------------------------------------------
    def observe(self, key: str, success: bool | None) -> bool:
        """Note an episode's outcome; True if this made the rule stop (now)."""
        if key not in self.task_of:
            return False
        self.outcome[key] = success
        if self.status != "running":
            return False
        {"halfwidth": self._advance_halfwidth, "decided": self._advance_decided, "all": self._advance_all}[
            self.rule.kind]()
        return self.status != "running"

    def skip(self, key: str) -> bool:
        """True if this episode need not run (the run stopped, or its task did)."""
        return self.status == "stopped" or self.task_of.get(key) in self.stopped_tasks

    @property
    def stopped(self) -> bool:
        return self.status == "stopped"

    # -- the rules ---------------------------------------------------------------------------
    def _advance_halfwidth(self) -> None:
        if self.rule.level == "suite":
            while self.next_round < self.rounds:
                keys = self.order[self.next_round * self.strata:(self.next_round + 1) * self.strata]
                values = [self.outcome.get(k, "missing") for k in keys]
                if any(v is None or v == "missing" for v in values):
                    break
                self.cs.update([sum(bool(v) for v in values)])
                self.next_round += 1
                self.consumed = self.next_round * self.strata
                lo, hi = self.cs.interval()
                if (hi[0] - lo[0]) / 2 <= self.rule.halfwidth + 1e-12:
                    exhausted = self.next_round == self.rounds
                    self._stop(f"95% confidence sequence half-width {(hi[0] - lo[0]) / 2:.4f} <= {self.rule.halfwidth}"
                               if not exhausted else "every episode ran", exhausted)
                    return
            if self.next_round == self.rounds and self.status == "running":
                self._stop("every episode ran", True)
            return
        for t in self.tasks:
            keys = self.task_keys[t]
            while t not in self.stopped_tasks and self.task_next[t] < len(keys):
                v = self.outcome.get(keys[self.task_next[t]], "missing")
                if v is None or v == "missing":
                    break
                cs = self.task_cs[t]
                cs.update([bool(v)])
                self.task_next[t] += 1
                lo, hi = cs.interval()
                if (hi[0] - lo[0]) / 2 <= self.rule.halfwidth + 1e-12 or self.task_next[t] == len(keys):
                    self.stopped_tasks[t] = {"task_id": t, "episodes": self.task_next[t], "low": float(lo[0]),
                                             "high": float(hi[0]), "halfwidth": float(hi[0] - lo[0]) / 2,
                                             "why": "half-width reached" if self.task_next[t] < len(keys) else "every episode ran"}
        self.consumed = sum(self.task_next.values())
        if len(self.stopped_tasks) == len(self.tasks):
            every = all(s["why"] == "every episode ran" for s in self.stopped_tasks.values())
            self._stop("every task's 95% confidence sequence is narrow enough" if not every else "every episode ran", every)

    def _advance_decided(self) -> None:
        while self.next_pair < len(self.order):
            key = self.order[self.next_pair]
            if key not in self.outcome:
                break
            a, b = self.baseline.get(key), self.outcome[key]
            self.test.update([0 if a is None or b is None else int(bool(b)) - int(bool(a))])
            self.next_pair += 1
            self.consumed = self.next_pair
            if self.test.decision[0] != 0:
                better = "this run" if self.test.decision[0] > 0 else "the baseline"
                self._stop(f"decided: {better} is better (sign-test e-value {self.e_value:.1f} >= 1/alpha = "
                           f"{1 / self.rule.alpha:.0f})", False)
                return
        if self.next_pair == len(self.order):
            self._stop("every paired episode ran, undecided", True)

    def _advance_all(self) -> None:
        while self.consumed < len(self.order) and self.order[self.consumed] in self.outcome:
            self.consumed += 1
        if self.consumed == len(self.order):
            self._stop("every episode ran", True)

    def _stop(self, reason: str, exhausted: bool) -> None:
        from nora_bench.run.rundir import now

        self.status = "exhausted" if exhausted else "stopped"
        self.reason, self.at = reason, now()

    # -- what it says ------------------------------------------------------------------------
    @property
    def e_value(self) -> float:
        import math

        return float(math.exp(self.test.log_e()[0]))

    def report(self) -> dict:
        """The record written to the run folder (stopping.json)."""
        out = {"rule": self.rule.to_dict(), "status": self.status, "reason": self.reason, "at": self.at,
               "episodes_in_order": len(self.order), "episodes_used": self.consumed,
               "episodes_recorded": len(self.outcome)}
        if self.rule.kind == "halfwidth" and self.rule.level == "suite":
            lo, hi = self.cs.interval()
            out["interval"] = {"low": float(lo[0]), "high": float(hi[0]), "halfwidth": float(hi[0] - lo[0]) / 2,
                               "method": "betting WoR confidence sequence, stratified rounds", "rounds": self.next_round}
        elif self.rule.kind == "halfwidth":
            out["tasks"] = [self.stopped_tasks.get(t) or self._task_state(t) for t in self.tasks]
        elif self.rule.kind == "decided":
            d, s = int(self.test.d[0]), int(self.test.s[0])
            out["test"] = {"method": "mixture e-process sign test on discordant pairs", "pairs": self.next_pair,
                           "only_this": s, "only_baseline": d - s, "e_value": self.e_value,
                           "anytime_p": float(self.test.p_value()[0]),
                           "decision": {1: "this run better", -1: "baseline better", 0: "undecided"}[int(self.test.decision[0])]}
        return out

    def _task_state(self, t: int) -> dict:
        lo, hi = self.task_cs[t].interval()
        return {"task_id": t, "episodes": self.task_next[t], "low": float(lo[0]), "high": float(hi[0]),
                "halfwidth": float(hi[0] - lo[0]) / 2, "why": "running"}
