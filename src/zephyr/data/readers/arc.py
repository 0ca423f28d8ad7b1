"""ARC JSONL (Challenge and/or Easy) -> MCQA rows; labels A-E or 1-5 map to an index."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import choice_index, find, jsonl, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats
from zephyr.errors import ZephyrError

GIVES = ("mcqa",)
SUBSETS = {"challenge": "ARC-Challenge", "easy": "ARC-Easy"}
SPLITS = {"train": "Train", "dev": "Dev", "validation": "Dev", "test": "Test"}


def files(spec: Source, root: Path) -> list[Path]:
    if spec.path:
        return [find(root, spec.path, spec.label)]
    split = SPLITS.get(spec.split or "train")
    subsets = list(SUBSETS) if spec.subset in (None, "both", "all") else [spec.subset]
    if split is None or any(s not in SUBSETS for s in subsets):
        raise ZephyrError(
            f"{spec.label}: arc takes split train/dev/test and subset challenge/easy/both; got "
            f"split={spec.split!r} subset={spec.subset!r}"
        )
    return [find(root, f"arc/{SUBSETS[s]}/{SUBSETS[s]}-{split}.jsonl", spec.label) for s in subsets]


def parse(obj: dict, subject: str) -> dict:
    q = obj.get("question") if isinstance(obj, dict) else None
    if not isinstance(q, dict) or not isinstance(q.get("choices"), list):
        raise Bad("'question' must hold 'stem' and a 'choices' list")
    choices = q["choices"]
    if len(choices) < 2 or not all(isinstance(c, dict) for c in choices):
        raise Bad("'question.choices' needs at least two {text, label} objects")
    labels = [str(c.get("label")) for c in choices]
    return {
        "question": text(q, "stem"),
        "choices": [text(c, "text") for c in choices],
        "answer": choice_index(str(obj.get("answerKey")), labels),
        "subject": subject,
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        subject = "arc_easy" if "Easy" in path.name else "arc_challenge"
        for line, obj in jsonl(path, stats):
            row = stats.parse(lambda o, s=subject: parse(o, s), obj, path, line)
            if row is not None:
                yield {"id": row_id(spec.label, path.name, line), **row}
