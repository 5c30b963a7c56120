"""Policies: one interface (`base.Policy`), built from presets (policies/*.yaml) by `make_policy`.

A policy kind is a class registered in `KINDS`; it is built as `Class(action_spec=..., **preset
fields)` for the env it will drive. What it needs from the env (`Requirements`) is known from the
preset before any policy is built (`preset_requirements`), and checked against the env's
`ActionSpec` before the first episode.
"""

from __future__ import annotations

import importlib
import inspect
import typing

from nora_bench import UserError
from nora_bench.checks import check_types_of
from nora_bench.policies.base import Policy
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
_RUN_KEYS = RUN_KEYS
# Constructor arguments the harness passes, never a preset.
_HARNESS_ARGS = ("self", "action_spec")


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


def _param_default(cls, name: str, fallback):
    p = inspect.signature(cls.__init__).parameters.get(name)
    return fallback if p is None or p.default is inspect.Parameter.empty else p.default


def preset_requirements(preset: dict) -> Requirements:
    """What the policy a preset builds needs from the env, without building it: a class's own
    `preset_requirements(params)` classmethod, else its `cameras` / `state` / `gripper` fields."""
    cls = policy_class(preset)
    params = policy_params(preset)
    own = getattr(cls, "preset_requirements", None)
    if own is not None:
        return own(params)
    # A preset that says nothing about cameras gets the class's default, else the third-person view.
    cameras = params.get("cameras", _param_default(cls, "cameras", ("agentview",)))
    state = params.get("state", _param_default(cls, "state", False))
    return Requirements(cameras=tuple(cameras or ()), state=bool(state),
                        gripper=params.get("gripper", _param_default(cls, "gripper", None)))


def check_preset(preset: dict) -> dict:
    """Fail fast, before any worker starts, on what a preset needs (a class's optional `check_preset`).

    Returns the preset with what the class resolved (e.g. a checkpoint's hub revision) under
    `resolved`, so that config.yaml records it.
    """
    cls = policy_class(preset)
    check_keys(cls, preset)
    check = getattr(cls, "check_preset", None)
    facts = check({k: v for k, v in preset.items() if k not in _RUN_KEYS}) if check is not None else None
    return {**preset, "resolved": facts} if facts else preset


def check_keys(cls, preset: dict) -> None:
    """A UserError naming a preset key the policy class does not take, or one whose value has another
    type than its constructor declares (before any worker starts: never an `error` per episode)."""
    params = inspect.signature(cls.__init__).parameters
    given = {k: v for k, v in preset.items() if k not in _RUN_KEYS}
    where = f"policy preset {preset.get('name')!r} (kind {preset['kind']})"
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        takes = [k for k, p in params.items()
                 if k not in _HARNESS_ARGS and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = [k for k in given if k not in takes]
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; {cls.__name__} takes: "
                            f"{', '.join(takes) or 'nothing'} (and {', '.join(sorted(_RUN_KEYS - {'resolved'}))})")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations this Python cannot evaluate: leave the types to the class
        return
    check_types_of(hints, given, where)


def override_preset(preset: dict, **overrides) -> dict:
    """The preset with command-line overrides (None = keep) written in, so config.yaml records them."""
    import inspect

    given = {k: v for k, v in overrides.items() if v is not None}
    params = inspect.signature(policy_class(preset).__init__).parameters
    for key in given:
        if key not in params:
            raise UserError(f"--{key} does not apply to policy preset {preset.get('name')!r} (kind {preset['kind']})")
    return {**preset, **given}


def make_policy(preset: dict, action_spec: ActionSpec) -> Policy:
    """The policy a preset describes, built for an env that declares `action_spec`."""
    cls = policy_class(preset)
    kwargs = policy_params(preset)
    try:
        policy = cls(action_spec=action_spec, **kwargs)
    except TypeError as e:
        raise UserError(f"malformed policy preset {preset.get('name')!r}: {e}") from None
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


__all__ = ["ActionChunk", "Policy", "PolicyBuildError", "Requirements", "make_policy", "check_preset", "override_preset",
           "preset_requirements", "policy_class", "policy_params", "KINDS", "RUN_KEYS"]
