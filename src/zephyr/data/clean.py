"""Row cleaning, each drop counted per source: empty fields, over-long rows, unsafe targets, exact and
normalised duplicates (across all sources of a kind: the first listed source keeps the row), plus PII
redaction (counted, not dropped) of the rows that are finally kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from zephyr.data import pii, unsafe
from zephyr.data.stats import Stats
from zephyr.data.text import META, row_text, target_text, words


@dataclass
class Seen:
    """Hashes of rows already kept for one record kind."""

    exact: set[bytes] = field(default_factory=set)
    normal: set[bytes] = field(default_factory=set)


def _digest(s: str) -> bytes:
    return hashlib.blake2b(s.encode(), digest_size=16).digest()


def empty_field(row: dict, kind: str) -> str | None:
    """The name of a required field that is empty or whitespace only, or None."""
    if kind == "sft":
        if "messages" in row:
            msgs = row["messages"]
            if not msgs or any(not m["content"].strip() for m in msgs):
                return "messages"
            return None if msgs[-1]["role"] == "assistant" else "messages (no final assistant turn)"
        fields = ("instruction", "output")
    elif kind == "pref":
        prompt = row["prompt"]
        if not (
            prompt.strip()
            if isinstance(prompt, str)
            else prompt and all(m["content"].strip() for m in prompt)
        ):
            return "prompt"
        fields = ("chosen", "rejected")
    else:
        if not row["choices"] or any(not str(c).strip() for c in row["choices"]):
            return "choices"
        fields = ("question",)
    return next((f for f in fields if not str(row.get(f, "")).strip()), None)


def redact_row(value, counts) -> object:
    """The row with PII replaced in every text field (ids and labels untouched)."""
    if isinstance(value, str):
        text, found = pii.redact(value)
        counts.update(found)
        return text
    if isinstance(value, list):
        return [redact_row(v, counts) for v in value]
    if isinstance(value, dict):
        return {
            k: v if k in META or k == "role" else redact_row(v, counts) for k, v in value.items()
        }
    return value


def clean(
    rows: Iterable[dict],
    kind: str,
    stats: Stats,
    seen: Seen,
    max_chars: int,
    block_unsafe: bool = True,
) -> list[dict]:
    """The rows that pass every check, in order; each dropped row counted under its reason.
    (PII is redacted later, by `redact_row`, on the rows that survive the caps only.)"""
    out = []
    for row in rows:
        if empty_field(row, kind):
            stats.dropped["empty_field"] += 1
            continue
        if kind == "pref" and row["chosen"].strip() == row["rejected"].strip():
            stats.dropped["chosen_equals_rejected"] += 1
            continue
        text = row_text(row)
        if len(text) > max_chars:
            stats.dropped["too_long"] += 1
            continue
        if block_unsafe and unsafe.flagged(target_text(row)):
            stats.dropped["unsafe"] += 1
            continue
        content = {k: v for k, v in row.items() if k not in ("id", "source")}
        exact = _digest(json.dumps(content, sort_keys=True, ensure_ascii=False))
        normal = _digest(" ".join(words(text)))
        if exact in seen.exact:
            stats.dropped["duplicate_exact"] += 1
            continue
        if normal in seen.normal:
            stats.dropped["duplicate_normalised"] += 1
            continue
        seen.exact.add(exact)
        seen.normal.add(normal)
        out.append(row)
    return out
