"""What every reader shares: finding files, iterating records with their line numbers, field checks."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
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


class _Capped(io.RawIOBase):
    """A byte stream that counts what it yields against the source's decompressed-size budget."""

    def __init__(self, raw: IO[bytes], path: Path, stats: Stats):
        self.raw, self.path, self.stats = raw, path, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.raw.readinto(buf)
        self.stats.bytes_read += n
        if self.stats.bytes_read > self.stats.max_source_bytes:
            raise ZephyrError(
                f"{self.path}: source '{self.stats.name}' holds more than "
                f"{self.stats.max_source_bytes} bytes once decompressed (data.max_source_bytes); "
                "check the file or raise the cap"
            )
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_text(path: Path, stats: Stats | None = None, newline: str | None = None) -> IO[str]:
    """Streamed text of a file (.gz and .bz2 decompressed on the fly, a UTF-8 BOM dropped), its
    decompressed bytes counted against `stats.max_source_bytes`. newline="" for the csv module."""
    stats = stats or Stats(str(path), "any")
    if path.suffix == ".gz":
        raw: IO[bytes] = gzip.open(path, "rb")
    elif path.suffix == ".bz2":
        raw = bz2.open(path, "rb")
    else:
        raw = open(path, "rb")  # noqa: SIM115 -- closed by the wrapper
    capped = io.BufferedReader(_Capped(raw, path, stats), buffer_size=1 << 16)
    return io.TextIOWrapper(capped, encoding="utf-8-sig", newline=newline)


class Lines:
    """The lines of a text stream, each read with a bound: a line longer than the source's
    `max_row_chars` is skipped in chunks (never held whole) and counted as a bad row.
    `line_num` is the physical line number of the last line read."""

    def __init__(self, f: IO[str], path: Path, stats: Stats):
        self.f, self.path, self.stats = f, path, stats
        self.line_num = 0
        self.first: int | None = None  # the first line yielded since the caller reset it

    def __iter__(self) -> Iterator[str]:
        limit = self.stats.max_row_chars
        while line := self.f.readline(limit + 1):
            self.line_num += 1
            if len(line.rstrip("\r\n")) > limit:
                while line and not line.endswith("\n"):
                    line = self.f.readline(limit + 1)
                self.stats.bad(self.path, self.line_num, f"line longer than {limit} characters")
                continue
            if self.first is None:
                self.first = self.line_num
            yield line


def jsonl(path: Path, stats: Stats) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-empty line; invalid JSON, a line over the row cap or one
    nested too deeply for Python is counted (or fails under --strict)."""
    with open_text(path, stats) as f:
        lines = Lines(f, path, stats)
        for line in lines:
            if not line.strip():
                continue
            try:
                yield lines.line_num, json.loads(line)
            except json.JSONDecodeError as e:
                stats.bad(path, lines.line_num, f"invalid JSON ({e.msg})")
            except RecursionError:
                stats.bad(path, lines.line_num, "nested too deeply")


def csv_records(path: Path, stats: Stats) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) per non-blank CSV record; a record the csv module refuses (a field
    over its 131072-character limit) or a line over the row cap is counted and skipped."""
    with open_text(path, stats, newline="") as f:
        lines = Lines(f, path, stats)
        reader = csv.reader(lines)
        while True:
            lines.first = None
            try:
                rec = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                stats.bad(path, lines.first or lines.line_num, f"CSV: {e}")
                continue
            if rec:
                yield lines.first or lines.line_num, rec


def json_array(path: Path, stats: Stats | None = None) -> Iterator[tuple[int, Any]]:
    """(line number where it starts, element) for each element of a top-level JSON array; an
    element over the row cap or nested too deeply is counted as a bad row."""
    stats = stats or Stats(str(path), "any")
    with open_text(path, stats) as f:
        text = f.read()
    dec = json.JSONDecoder()
    pos, line, last = _skip(text, 0), 1, 0
    if text[pos : pos + 1] != "[":
        raise ZephyrError(f"{path} must hold a JSON array of objects; check the source's format")
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", last, pos)
        last = start = pos
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ZephyrError(
                f"{path}:{e.lineno} is not valid JSON ({e.msg}); fix or remove the file"
            ) from None
        except RecursionError:
            obj, pos = _TOO_DEEP, _value_end(text, pos)
        if obj is _TOO_DEEP:
            stats.bad(path, line, "nested too deeply")
        elif pos - start > stats.max_row_chars:
            stats.bad(path, line, f"element longer than {stats.max_row_chars} characters")
        else:
            yield line, obj
        pos = _skip(text, pos)
        if text[pos : pos + 1] == ",":
            pos = _skip(text, pos + 1)
    if text[pos : pos + 1] != "]":
        raise ZephyrError(f"{path} ends before its JSON array closes; the file looks truncated")


_TOO_DEEP = object()


def _value_end(text: str, pos: int) -> int:
    """Where the JSON value starting at `pos` ends: brackets matched outside strings, no recursion
    (used only for an element too deep for the decoder)."""
    depth, i, in_str = 0, pos, False
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1 if depth == 0 else i
        elif c == "," and depth == 0:
            return i
        i += 1
    raise ZephyrError(f"a JSON value at character {pos} never closes; the file looks truncated")


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
