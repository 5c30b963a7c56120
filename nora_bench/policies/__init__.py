"""Policies: one interface (`base.Policy`), built from presets (policies/*.yaml) by `make_policy`.

A policy kind is a class registered in `KINDS` with a config dataclass (`config_class`, see
policies/config.py) that holds and checks its preset fields; it is built as `Class(config,
action_spec)` for the env it will drive. What it needs from the env (`Requirements`) is the
config's `requirements()`, known before any policy is built and checked against the env's
`ActionSpec` before the first episode.
"""

from __future__ import annotations

import importlib
import inspect

from nora_bench import UserError
from nora_bench.policies.base import Policy
from nora_bench.policies.config import PolicyConfig, config_class_of
from nora_bench.types import ActionChunk, ActionSpec, Requirements

# kind -> "module:factory"; imported lazily so that `zero` never pays for torch.
KINDS: dict[str, str] = {
    "scripted": "nora_bench.policies.scripted:ScriptedPolicy",  # privileged-state LIBERO expert
    "zero": "nora_bench.policies.trivial:ZeroPolicy",
    "random": "nora_bench.policies.trivial:RandomPolicy",
    "nora": "nora_bench.policies.nora:NoraPolicy",
    "nora15": "nora_bench.policies.nora15:Nora15Policy",  # NORA-1.5: flow-matching action expert
    "remote": "nora_bench.policies.remote:RemotePolicy",  # a policy server: openpi or vla-eval protocol
}

# What a policy class must have (nora_bench/policies/base.py); checked before it is called.
_CONTRACT = ("start_episode", "act", "end_episode")

# Preset keys that describe the run rather than the policy object.
RUN_KEYS = frozenset({"name", "kind", "description", "chunk_exec", "serve", "resolved"})


def policy_class(preset: dict):
    kind = preset["kind"]
    # A kind is a registered name, or "package.module:Class" for a policy of your own.
    target = KINDS.get(kind, kind if ":" in kind else None)
    if target is None:
        raise UserError(f"unknown policy kind {kind!r} in preset {preset.get('name')!r}; known kinds: "
                        f"{', '.join(sorted(KINDS))}, or 'package.module:Class' for your own")
    module, factory = target.split(":", 1)
    # Importing `module` runs its code, as importing a Python file does: presets are code-trusted
    # (README, "Guarantees"). What is taken from it must be a policy class; nothing else is called.
    try:
        cls = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load policy kind {kind!r}: {e}") from None
    except Exception as e:  # the module itself raised while being imported
        raise UserError(f"cannot load policy kind {kind!r}: importing {module} raised {type(e).__name__}: {e}") from None
    missing = [m for m in _CONTRACT if not callable(getattr(cls, m, None))] if inspect.isclass(cls) else None
    if missing is None or missing:
        what = f"lacks {', '.join(missing)}" if missing else f"is a {type(cls).__name__}, not a class"
        raise UserError(f"policy kind {kind!r} in preset {preset.get('name')!r} is not a policy: {target} {what} "
                        f"(a policy kind is a class with {', '.join(_CONTRACT)}: see nora_bench/policies/base.py)")
    return cls


def policy_params(preset: dict) -> dict:
    """The preset's fields that configure the policy object (not the run)."""
    return {k: v for k, v in preset.items() if k not in RUN_KEYS}


def policy_config(preset: dict) -> PolicyConfig:
    """The preset's policy fields as its kind's config dataclass, checked (one UserError naming the key)."""
    cls = policy_class(preset)
    where = f"policy preset {preset.get('name')!r} (kind {preset['kind']})"
    return config_class_of(cls).from_preset(policy_params(preset), where, cls.__name__,
                                            RUN_KEYS - {"resolved"})


def preset_requirements(preset: dict) -> Requirements:
    """What the policy a preset builds needs from the env, without building it."""
    return policy_config(preset).requirements()


def check_preset(preset: dict) -> dict:
    """Fail fast, before any worker starts, on what a preset needs: its config, then the class's optional
    `check_config(config)` (files, a server). Returns the preset with what that resolved (e.g. a
    checkpoint's hub revision) under `resolved`, so that config.yaml records it."""
    config = policy_config(preset)
    check = getattr(policy_class(preset), "check_config", None)
    facts = check(config) if check is not None else None
    return {**preset, "resolved": facts} if facts else preset


def override_preset(preset: dict, **overrides) -> dict:
    """The preset with command-line overrides (None = keep) written in, so config.yaml records them."""
    given = {k: v for k, v in overrides.items() if v is not None}
    takes = config_class_of(policy_class(preset)).keys()
    for key in given:
        if key not in takes:
            raise UserError(f"--{key} does not apply to policy preset {preset.get('name')!r} (kind {preset['kind']})")
    return {**preset, **given}


def make_policy(preset: dict, action_spec: ActionSpec) -> Policy:
    """The policy a preset describes, built for an env that declares `action_spec`."""
    cls = policy_class(preset)
    config = policy_config(preset)
    try:
        if config.from_constructor:
            policy = cls(action_spec=action_spec, **config.as_dict())
        else:
            policy = cls(config, action_spec)
    except UserError:
        raise
    except Exception as e:  # a broken checkpoint, a missing file: one line, named, not a worker traceback
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise PolicyBuildError(f"cannot build policy {preset.get('name')!r} (kind {preset['kind']}): "
                               f"{type(e).__name__}: {first}") from None
    if not isinstance(getattr(policy, "requirements", None), Requirements):
        raise PolicyBuildError(f"policy {preset.get('name')!r} (kind {preset['kind']}) has no `requirements` "
                               "(a nora_bench.policies.base.Requirements): see nora_bench/policies/base.py")
    return policy


class PolicyBuildError(UserError):
    """The policy could not be built from its preset (raised where it is built, reported by the driver)."""


__all__ = ["ActionChunk", "Policy", "PolicyBuildError", "PolicyConfig", "Requirements", "make_policy", "check_preset",
           "override_preset", "preset_requirements", "policy_class", "policy_config", "policy_params", "KINDS", "RUN_KEYS"]
