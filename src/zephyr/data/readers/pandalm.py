"""PandaLM human preferences (3 labels: 1 = response1 better, 2 = response2, 0 = tie) -> preference rows.

The majority label wins; a majority tie, or three different labels, drops the pair (counted as `tie`),
as the EPFL filter drops pairs whose overall preference is a tie.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, json_array, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats

GIVES = ("pref",)


def files(spec: Source, root: Path) -> list[Path]:
    return [find(root, spec.path or "pandalm-human-preferences/testset-v1.json", spec.label)]


def majority(labels: list[int]) -> int:
    """1 or 2 when at least two annotators agree on it; 0 for a tie or no majority."""
    label, count = Counter(labels).most_common(1)[0]
    return label if count >= 2 else 0


def response(obj: dict, key: str) -> str:
    """A response; a few are JSON booleans or numbers (a model answered `True`): kept as text."""
    value = obj.get(key)
    if isinstance(value, bool | int | float):
        return str(value)
    return text(obj, key)


def parse(obj: dict) -> dict:
    labels = [obj.get(f"annotator{i}") if isinstance(obj, dict) else None for i in (1, 2, 3)]
    if any(label not in (0, 1, 2) for label in labels):
        raise Bad(f"annotator labels must be 0, 1 or 2; got {labels}")
    prompt = text(obj, "instruction")
    if (inp := text(obj, "input", required=False)).strip():
        prompt = f"{prompt}\n\n{inp}"
    r1, r2 = response(obj, "response1"), response(obj, "response2")
    win = majority(labels)
    return {
        "prompt": prompt,
        "chosen": r1 if win == 1 else r2,
        "rejected": r2 if win == 1 else r1,
        "win": win,
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        for line, obj in json_array(path, stats):
            row = stats.parse(parse, obj, path, line)
            if row is None:
                continue
            if row.pop("win") == 0:
                stats.dropped["tie"] += 1
                continue
            yield {"id": row_id(spec.label, path.name, line), **row}
