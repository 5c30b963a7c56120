"""Policies: one interface (`base.Policy`), built from presets (policies/*.yaml) by `make_policy`."""

from __future__ import annotations

import importlib

from nora_bench import UserError
from nora_bench.policies.base import ActionChunk, Policy, Requirements

# kind -> "module:factory"; imported lazily so that `zero` never pays for torch.
KINDS: dict[str, str] = {
    "zero": "nora_bench.policies.trivial:ZeroPolicy",
    "random": "nora_bench.policies.trivial:RandomPolicy",
}

# Preset keys that describe the run rather than the policy object.
_RUN_KEYS = {"name", "kind", "description", "chunk_exec", "serve"}


def make_policy(preset: dict) -> Policy:
    kind = preset["kind"]
    # A kind is a registered name, or "package.module:Class" for a policy of your own.
    target = KINDS.get(kind, kind if ":" in kind else None)
    if target is None:
        raise UserError(f"unknown policy kind {kind!r} in preset {preset.get('name')!r}; known kinds: "
                        f"{', '.join(sorted(KINDS))}, or 'package.module:Class' for your own")
    module, factory = target.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load policy kind {kind!r}: {e}") from None
    kwargs = {k: v for k, v in preset.items() if k not in _RUN_KEYS}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise UserError(f"malformed policy preset {preset.get('name')!r}: {e}") from None


__all__ = ["ActionChunk", "Policy", "Requirements", "make_policy", "KINDS"]
