"""A policy that fails before its first action in every episode is a setup error, not a 0% result.

The scheduler passes each finished outcome through `SetupGate.admit`. Until some episode has
executed a policy action, outcomes that ended in `policy_error` with no action executed are held
back (not written); when `limit` of them pile up, or the run ends with nothing else, the gate
raises a UserError naming the policy's error. Once the policy has acted once, held outcomes are
released and recorded like any other (a policy may fail on some episodes: that is a result).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nora_bench import UserError
from nora_bench.episode import ERROR, POLICY_ERROR, EpisodeOutcome


@dataclass
class SetupGate:
    limit: int  # how many episodes in a row without an action make a setup error
    policy: str = ""
    proven: bool = False
    held: list = field(default_factory=list)

    def admit(self, outcome: EpisodeOutcome, item) -> list:
        """The items to record now (in order): none while the policy has never acted."""
        if self.proven:
            return [item]
        if outcome.termination == POLICY_ERROR and not outcome.env_steps:
            self.held.append((outcome, item))
            if len(self.held) >= self.limit:
                raise self.error()
            return []
        if outcome.termination == ERROR:  # an env/worker error proves nothing either way
            return [item]
        self.proven = True
        released, self.held = [i for _, i in self.held], []
        return released + [item]

    def finish(self) -> None:
        """At the end of a run: held outcomes nothing proved otherwise are a setup error."""
        if self.held:
            raise self.error()

    def error(self) -> UserError:
        first = self.held[0][0].error or "no usable action"
        n = len(self.held)
        return UserError(f"policy {self.policy!r} failed before its first action in {'each of ' if n > 1 else ''}"
                         f"{n} episode{'s' if n > 1 else ''} ({first}): a setup error, not a result, so none was "
                         "recorded; fix the policy or its preset and run again")
