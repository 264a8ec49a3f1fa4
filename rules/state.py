"""Rule state to and from plain JSON, so a restarted gateway continues timers and windows.

Rule families keep their state in small dataclasses. `dump` turns them into JSON-ready
values (datetimes as ISO 8601 strings, sets as sorted lists); `load` rebuilds them from
the dataclass's type hints, so every family gets its snapshot without hand-written code.
"""

from __future__ import annotations

import types
from collections.abc import Container
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def dump(value: Any) -> Any:
    """A JSON-ready copy of `value` (dataclasses, datetimes, containers, scalars)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(dump(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value


def load(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass `cls` from `dump`'s output; keys it does not know are ignored."""
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _as(hints[k], v) for k, v in data.items() if k in names})


def _as(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return _as(next(a for a in args if a is not type(None)), value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is float:
        return float(value)
    if origin is list:
        return [_as(args[0], v) for v in value]
    if origin is set:
        return {_as(args[0], v) for v in value}
    if origin is dict:
        return {k: _as(args[1], v) for k, v in value.items()}
    if is_dataclass(hint):
        return load(hint, value)
    return value


def check_version(snapshot: dict[str, Any], family: str, readable: Container[int]) -> int:
    """The snapshot's version if the family can read it; ValueError otherwise, so a gateway
    never restores a state it would misread (it starts that family empty instead)."""
    version = snapshot.get("version")
    if version not in readable:
        raise ValueError(f"unsupported {family} snapshot version {version!r}")
    return version  # type: ignore[return-value]
