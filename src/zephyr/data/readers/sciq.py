"""SciQ JSON array -> MCQA rows; the correct answer's position is shuffled per row (seeded by its id)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, json_array, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Stats

GIVES = ("mcqa",)


def files(spec: Source, root: Path) -> list[Path]:
    return [find(root, spec.path or f"sciq/{spec.split or 'valid'}.json", spec.label)]


def parse(obj: dict, rid: str) -> dict:
    correct = text(obj, "correct_answer")
    choices = [correct] + [text(obj, f"distractor{i}") for i in (1, 2, 3)]
    # the file always lists the correct answer first; a stable per-row shuffle removes that tell
    order = list(range(4))
    random.Random(rid).shuffle(order)
    return {
        "id": rid,
        "question": text(obj, "question"),
        "choices": [choices[i] for i in order],
        "answer": order.index(0),
        "subject": "science",
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        for line, obj in json_array(path, stats):
            rid = row_id(spec.label, path.name, line)
            if (row := stats.parse(lambda o, r=rid: parse(o, r), obj, path, line)) is not None:
                yield row
