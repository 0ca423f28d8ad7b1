"""Per-source counters: rows read, dropped by reason, PII found, the first malformed rows."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

MAX_EXAMPLES = 5
MAX_ROW_CHARS = 1_000_000  # a longer raw line / record is a bad row (data.max_row_chars)
MAX_SOURCE_BYTES = 1 << 30  # a source decompressing to more stops the build (data.max_source_bytes)
SURROGATE = re.compile("[\ud800-\udfff]")


class Bad(Exception):
    """A malformed record; the message is the reason."""


@dataclass
class Stats:
    name: str
    kind: str
    strict: bool = False
    files: list[str] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    train: int = 0
    val: int = 0
    dropped: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    malformed: list[dict] = field(default_factory=list)
    max_row_chars: int = MAX_ROW_CHARS
    max_source_bytes: int = MAX_SOURCE_BYTES
    bytes_read: int = 0  # decompressed bytes of this source's files so far

    def bad(self, file: str | Path, line: int, reason: str) -> None:
        """Count a malformed record, or fail naming file and line under --strict."""
        if self.strict:
            raise ZephyrError(
                f"{file}:{line}: {reason} (malformed row; drop --strict to skip and count such rows)"
            )
        self.dropped["malformed"] += 1
        if len(self.malformed) < MAX_EXAMPLES:
            self.malformed.append({"file": str(file), "line": line, "reason": reason})

    def parse(self, fn: Callable[..., dict], obj: Any, file: str | Path, line: int) -> dict | None:
        """fn(obj) or None when it raises Bad (counted as malformed), nests too deeply for Python
        to walk, or holds a lone surrogate (text that cannot be written as UTF-8)."""
        try:
            row = fn(obj)
            if (where := surrogate_field(row)) is not None:
                raise Bad(f"lone surrogate (not valid UTF-8) in {where}")
            return row
        except Bad as e:
            self.bad(file, line, str(e))
        except RecursionError:
            self.bad(file, line, "nested too deeply")
        return None

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "files": self.files,
            "read": self.read,
            "kept": self.kept,
            "train": self.train,
            "val": self.val,
            "dropped": dict(sorted(self.dropped.items())),
            "pii_redacted": dict(sorted(self.pii.items())),
            "malformed_examples": self.malformed,
        }


def surrogate_field(value: Any, where: str = "row") -> str | None:
    """The path of the first string holding a lone surrogate (e.g. JSON "\\ud800"), or None."""
    if isinstance(value, str):
        return where if SURROGATE.search(value) else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        if (found := surrogate_field(k, where) or surrogate_field(v, f"{where}.{k}")) is not None:
            return found
    return None
