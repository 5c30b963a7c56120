"""Checks of preset values against the types a dataclass or constructor declares (one UserError
naming the key); used by config.py for suites and by policies/ for policy presets."""

from __future__ import annotations

import types
import typing
from typing import Any

from nora_bench import UserError


def check_types_of(hints: dict, data: dict, where: str) -> None:
    for key, value in data.items():
        if key in hints and not _is_a(value, hints[key]):
            raise UserError(f"{where}: {key} is {value!r} ({type(value).__name__}), expected {_type_name(hints[key])}")


def _is_a(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    base = origin or hint
    if base in (str, bool, list, dict, tuple):
        return isinstance(value, (list, tuple) if base in (list, tuple) else base)
    return True


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    return "null" if hint is type(None) else getattr(typing.get_origin(hint) or hint, "__name__", str(hint))
