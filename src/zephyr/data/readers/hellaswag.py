"""HellaSwag 6-line text (context, gold label, 4 endings), bz2 -> MCQA rows (an eval set here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, open_text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats

GIVES = ("mcqa",)


def files(spec: Source, root: Path) -> list[Path]:
    return [find(root, spec.path or "hellaswag/hellaswag_val_full.txt.bz2", spec.label)]


def parse(lines: list[str]) -> dict:
    if len(lines) != 6:
        raise Bad(f"incomplete task: {len(lines)} of 6 lines")
    if lines[1].strip() not in ("0", "1", "2", "3"):
        raise Bad(f"gold label must be 0-3, got {lines[1].strip()!r}")
    return {
        "question": lines[0],
        "choices": lines[2:6],
        "answer": int(lines[1]),
        "subject": "hellaswag",
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        with open_text(path, stats) as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the trailing newline
        for start in range(0, len(lines), 6):
            row = stats.parse(parse, lines[start : start + 6], path, start + 1)
            if row is not None:
                yield {"id": row_id(spec.label, path.name, start + 1), **row}
