"""Plain YAML mapped to typed dataclasses, with one clear sentence for a bad key or value."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from zephyr.errors import ZephyrError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ZephyrError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ZephyrError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ZephyrError(f"{path} must hold a mapping of keys at the top level")
    return data


def _unknown_key_error(key: str, known: list[str], where: str) -> ZephyrError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ZephyrError(
        f"unknown key '{key}' in {where}{hint}; known keys: {', '.join(sorted(known))}"
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ZephyrError as e:
                errors.append(str(e))
        raise ZephyrError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ZephyrError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ZephyrError(f"{where} must be a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ZephyrError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ZephyrError(
                f"{where} must be one of {', '.join(map(str, allowed))}; got {value!r}"
            )
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ZephyrError(f"{where} must be a number, got {value!r}") from None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ZephyrError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict | None, where: str) -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types name the key and place."""
    data = data or {}
    if not isinstance(data, dict):
        raise ZephyrError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key_error(key, names, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ZephyrError(f"{where}: {e}") from None


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def parse_sets(pairs: list[str] | None) -> list[tuple[str, Any]]:
    """`--set key=value` strings -> (dotted key, YAML-parsed value), e.g. `sft.lr=1e-3`."""
    out = []
    for item in pairs or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ZephyrError(
                f"--set {item!r} is not key=value; e.g. --set sft.lr=1e-3 or --set data.sft.0.cap=100"
            )
        try:
            out.append((key.strip(), yaml.safe_load(value)))
        except yaml.YAMLError as e:
            raise ZephyrError(f"--set {item!r}: the value is not valid YAML ({e})") from None
    return out


def set_dotted(data: dict, key: str, value: Any, where: str) -> None:
    """data['a']['b'] = value for key 'a.b'; a missing or empty mapping on the way is created, and
    an integer part indexes a list (`data.sft.0.cap`)."""
    node: Any = data
    *parents, leaf = key.split(".")
    for i, part in enumerate(parents):
        here = ".".join(parents[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, here, where)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict | list):
            raise ZephyrError(f"{where}: cannot set '{key}': '{here}' is {node!r}, not a mapping")
    if isinstance(node, list):
        node[_index(node, leaf, key, where)] = value
    else:
        node[leaf] = value


def _index(items: list, part: str, key: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ZephyrError(
            f"{where}: '{key}' indexes a list of {len(items)} items; use 0..{len(items) - 1}"
        )
    return int(part)
