"""Per-source counters: rows read, dropped by reason, PII found, the first malformed rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

MAX_EXAMPLES = 5


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
        """fn(obj) or None when it raises Bad (counted as malformed)."""
        try:
            return fn(obj)
        except Bad as e:
            self.bad(file, line, str(e))
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
