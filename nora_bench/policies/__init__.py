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
    "nora": "nora_bench.policies.nora:NoraPolicy",
}

# Preset keys that describe the run rather than the policy object.
_RUN_KEYS = {"name", "kind", "description", "chunk_exec", "serve", "resolved"}


def policy_class(preset: dict):
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
    return cls


def check_preset(preset: dict) -> dict:
    """Fail fast, before any worker starts, on what a preset needs (a class's optional `check_preset`).

    Returns the preset with what the class resolved (e.g. a checkpoint's hub revision) under
    `resolved`, so that config.yaml records it.
    """
    check = getattr(policy_class(preset), "check_preset", None)
    facts = check({k: v for k, v in preset.items() if k not in _RUN_KEYS}) if check is not None else None
    return {**preset, "resolved": facts} if facts else preset


def override_preset(preset: dict, **overrides) -> dict:
    """The preset with command-line overrides (None = keep) written in, so config.yaml records them."""
    import inspect

    given = {k: v for k, v in overrides.items() if v is not None}
    params = inspect.signature(policy_class(preset).__init__).parameters
    for key in given:
        if key not in params:
            raise UserError(f"--{key} does not apply to policy preset {preset.get('name')!r} (kind {preset['kind']})")
    return {**preset, **given}


def make_policy(preset: dict) -> Policy:
    cls = policy_class(preset)
    kwargs = {k: v for k, v in preset.items() if k not in _RUN_KEYS}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise UserError(f"malformed policy preset {preset.get('name')!r}: {e}") from None


__all__ = ["ActionChunk", "Policy", "Requirements", "make_policy", "check_preset", "override_preset", "KINDS"]
