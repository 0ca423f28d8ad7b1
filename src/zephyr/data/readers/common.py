"""What every reader shares: finding files, iterating records with their line numbers, field checks."""

from __future__ import annotations

import bz2
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from zephyr.data.stats import Bad, Stats
from zephyr.errors import ZephyrError


def find(root: Path, rel: str | Path, what: str) -> Path:
    """A data file under the data root (or an absolute path) that must exist."""
    path = Path(rel).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ZephyrError(
            f"data file not found for {what}: {path} (point --data-root or the source's `path` at it)"
        )
    return path


def open_text(path: Path) -> IO[str]:
    """Text handle; .gz and .bz2 are decompressed on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8", newline="")


def jsonl(path: Path, stats: Stats) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-empty line; invalid JSON is counted (or fails under --strict)."""
    with open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                stats.bad(path, i, f"invalid JSON ({e.msg})")


def json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number where it starts, element) for each element of a top-level JSON array."""
    with open_text(path) as f:
        text = f.read()
    dec = json.JSONDecoder()
    pos, line, last = _skip(text, 0), 1, 0
    if text[pos : pos + 1] != "[":
        raise ZephyrError(f"{path} must hold a JSON array of objects; check the source's format")
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", last, pos)
        last = pos
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ZephyrError(
                f"{path}:{e.lineno} is not valid JSON ({e.msg}); fix or remove the file"
            ) from None
        yield line, obj
        pos = _skip(text, pos)
        if text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)
    if text[pos : pos + 1] != "]":
        raise ZephyrError(f"{path} ends before its JSON array closes; the file looks truncated")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def text(obj: Any, key: str, required: bool = True) -> str:
    """obj[key] as a string; a missing or non-string field makes the record malformed."""
    if not isinstance(obj, dict):
        raise Bad(f"expected an object, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise Bad(f"field '{key}' missing or not a string")
    return value


def choice_index(label: str, labels: list[str]) -> int:
    if label not in labels:
        raise Bad(f"answer '{label}' is not one of the choice labels {labels}")
    return labels.index(label)
