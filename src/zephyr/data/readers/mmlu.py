"""MMLU CSV without header (question, A, B, C, D, letter) -> MCQA rows; subject from the file name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import choice_index, csv_records, find
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats
from zephyr.errors import ZephyrError

GIVES = ("mcqa",)
SPLITS = ("dev", "val", "test")


def files(spec: Source, root: Path) -> list[Path]:
    if spec.path:
        return [find(root, spec.path, spec.label)]
    split = spec.split or "dev"
    if split not in SPLITS:
        raise ZephyrError(
            f"{spec.label}: mmlu split must be one of {', '.join(SPLITS)}; got {split!r}"
        )
    folder = root / "mmlu" / split
    subjects = [spec.subset] if spec.subset else None
    found = sorted(folder.glob(f"*_{split}.csv"))
    if subjects:
        found = [p for p in found if subject_of(p) in subjects]
    if not found:
        raise ZephyrError(
            f"no MMLU files found for {spec.label} in {folder} (point --data-root at the data)"
        )
    return found


def subject_of(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0]


def parse(rec: list[str], subject: str) -> dict:
    if len(rec) != 6:
        raise Bad(f"expected 6 columns (question, A, B, C, D, answer), got {len(rec)}")
    return {
        "question": rec[0],
        "choices": rec[1:5],
        "answer": choice_index(rec[5].strip(), ["A", "B", "C", "D"]),
        "subject": subject,
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        subject = subject_of(path)
        for start, rec in csv_records(path, stats):
            row = stats.parse(lambda r, s=subject: parse(r, s), rec, path, start)
            if row is not None:
                yield {"id": row_id(spec.label, path.name, start), **row}
