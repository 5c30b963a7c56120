"""Policies: one interface (`base.Policy`), built from presets (policies/*.yaml) by `make_policy`."""

from __future__ import annotations

import importlib

from nora_bench import UserError
from nora_bench.policies.base import ActionChunk, Policy, Requirements

# kind -> "module:factory"; imported lazily so that `zero` never pays for torch.
KINDS: dict[str, str] = {
    "scripted": "nora_bench.policies.scripted:ScriptedPolicy",  # privileged-state LIBERO expert
    "zero": "nora_bench.policies.trivial:ZeroPolicy",
    "random": "nora_bench.policies.trivial:RandomPolicy",
}

# Preset keys that describe the run rather than the policy object.
_RUN_KEYS = {"name", "kind", "description", "chunk_exec"}


def make_policy(preset: dict) -> Policy:
    kind = preset["kind"]
    if kind not in KINDS:
        raise UserError(f"unknown policy kind {kind!r} in preset {preset.get('name')!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, factory = KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module), factory)
    kwargs = {k: v for k, v in preset.items() if k not in _RUN_KEYS}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise UserError(f"malformed policy preset {preset.get('name')!r}: {e}") from None


__all__ = ["ActionChunk", "Policy", "Requirements", "make_policy", "KINDS"]
