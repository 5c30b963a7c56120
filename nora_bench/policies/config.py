"""A policy kind's preset fields as a frozen dataclass, checked before anything is built.

Every built-in kind declares `config_class`, a subclass of `PolicyConfig` (LeRobot's registered
config dataclasses are the model): `PolicyConfig.from_preset` refuses unknown keys, missing required
keys and values of the wrong type, then the class's own `check()` refuses bad values, each in one
line that names the key. The policy is then built as `Class(config, action_spec)`.

A `module:Class` kind of a user's own may skip the dataclass: its constructor's keyword parameters
(with their annotations and defaults) become one (`config_class_of`), and it is built as
`Class(action_spec=..., **fields)`. A constructor with `**kwargs` takes keys it does not name unchecked.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, ClassVar

from nora_bench import UserError
from nora_bench.checks import check_types_of
from nora_bench.types import Requirements


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    """Base of every policy kind's config: subclass it with the kind's preset fields."""

    # Built from a constructor signature (a user's class without `config_class`); see the module docstring.
    from_constructor: ClassVar[bool] = False
    open_keys: ClassVar[bool] = False  # the constructor takes **kwargs: unnamed keys pass unchecked

    def check(self) -> None:
        """Raise UserError on a bad value (the message names the key and the fix)."""

    def requirements(self) -> Requirements:
        """What the env must render and provide; by default from `cameras`, `state` and `gripper` fields
        (a preset that names no camera gets the third-person view)."""
        cameras = getattr(self, "cameras", ("agentview",))
        return Requirements(cameras=tuple(cameras or ()), state=bool(getattr(self, "state", False)),
                            gripper=getattr(self, "gripper", None))

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]

    @classmethod
    def from_preset(cls, params: dict, where: str, owner: str, run_keys: typing.Iterable[str] = ()):
        """The config of `params` (a preset's policy fields); a UserError naming the first problem.

        `where` starts every message (e.g. "policy preset 'x' (kind nora)"); `owner` names the class
        in the list of keys it takes.
        """
        known = cls.keys()
        unknown = [k for k in params if k not in known]
        if unknown and not cls.open_keys:
            also = f" (and {', '.join(sorted(run_keys))})" if run_keys else ""
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; {owner} takes: "
                            f"{', '.join(known) or 'nothing'}{also}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in params]
        if missing:
            raise UserError(f"{where}: missing required key(s) {', '.join(missing)}")
        hints = _hints(cls)
        check_types_of(hints, params, where)
        values = {k: tuple(v) if isinstance(v, list) and _wants_tuple(hints.get(k)) else v
                  for k, v in params.items() if k in known}
        if unknown:  # open_keys: the constructor's **kwargs take them
            values["_extra"] = {k: params[k] for k in unknown}
        config = cls(**values)
        try:
            config.check()
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        return config

    def as_dict(self) -> dict[str, Any]:
        """Every field with its value, defaults included (then a `**kwargs` constructor's unchecked keys):
        the keyword arguments of a class built from its constructor, and what environment.json records."""
        named = {k: getattr(self, k) for k in self.keys()}
        return {**named, **getattr(self, "_extra", {})}


def config_class_of(cls) -> type[PolicyConfig]:
    """`cls.config_class`, else a config dataclass made from its constructor's keyword parameters."""
    # The config belongs to the class that defines the constructor: a subclass that only overrides
    # `act` keeps its base's config; one with an `__init__` of its own and no `config_class` gets one
    # made from that `__init__`.
    for klass in cls.__mro__:
        declared = vars(klass).get("config_class")
        if declared is not None:
            if not (inspect.isclass(declared) and issubclass(declared, PolicyConfig)):
                raise UserError(f"{cls.__module__}:{cls.__name__}.config_class must be a subclass of "
                                "nora_bench.policies.config.PolicyConfig")
            return declared
        if "__init__" in vars(klass):
            break
    cached = cls.__dict__.get("_derived_config")
    if cached is not None:
        return cached
    params = inspect.signature(cls.__init__).parameters if cls.__init__ is not object.__init__ else {}
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations this Python cannot evaluate: the types are left to the class
        hints = {}
    if "config" in params:
        raise UserError(f"{cls.__module__}:{cls.__name__} takes a `config` but declares no `config_class` "
                        "(a nora_bench.policies.config.PolicyConfig subclass)")
    fields: list = []
    for name, p in params.items():
        if name in ("self", "action_spec") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if hasattr(PolicyConfig, name):  # a field would hide the config's own method
            raise UserError(f"{cls.__module__}:{cls.__name__}: constructor parameter `{name}` is a name the config "
                            "uses; rename it or declare a `config_class`")
        default = dataclasses.field() if p.default is p.empty else dataclasses.field(default=p.default)
        fields.append((name, hints.get(name, Any), default))
    open_keys = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if open_keys:
        fields.append(("_extra", dict, dataclasses.field(default_factory=dict)))
    derived = dataclasses.make_dataclass(
        f"{cls.__name__}Config", fields, bases=(PolicyConfig,), frozen=True, kw_only=True,
        namespace={"from_constructor": True, "open_keys": open_keys, "__module__": cls.__module__})
    setattr(cls, "_derived_config", derived)
    return derived


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


def _wants_tuple(hint) -> bool:
    if hint is None:
        return False
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any((typing.get_origin(a) or a) is tuple for a in args)
