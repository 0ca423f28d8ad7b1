"""GSM8K JSONL (`question`, `answer` ending `#### n`) -> SFT rows whose solution ends `Answer: n`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, jsonl, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats

GIVES = ("sft",)
CALC = re.compile(r"<<[^<>]*>>")  # calculator annotations, e.g. 48/2 = <<48/2=24>>24
FINAL = re.compile(r"\n?####\s*(.+?)\s*$")


def files(spec: Source, root: Path) -> list[Path]:
    return [find(root, spec.path or f"gsm8k/{spec.split or 'train'}.jsonl", spec.label)]


def solution(answer: str, keep_calc: bool = False) -> str:
    """The worked solution with the project's final line (`Answer: n`) instead of `#### n`.

    `keep_calc` keeps the `<<expr=result>>` annotations (calculator-augmented training)."""
    m = FINAL.search(answer)
    if not m:
        raise Bad("answer has no final '#### <number>' line")
    steps = answer[: m.start()] if keep_calc else CALC.sub("", answer[: m.start()])
    steps = steps.strip()
    return f"{steps}\nAnswer: {m.group(1)}"


def parse(obj: dict, keep_calc: bool = False) -> dict:
    return {
        "instruction": text(obj, "question"),
        "input": "",
        "output": solution(text(obj, "answer"), keep_calc),
    }


def rows(
    spec: Source, paths: list[Path], stats: Stats, kind: str, keep_calc: bool = False
) -> Iterator[dict]:
    def one(obj: dict) -> dict:
        return parse(obj, keep_calc)

    for path in paths:
        for line, obj in jsonl(path, stats):
            if (row := stats.parse(one, obj, path, line)) is not None:
                yield {"id": row_id(spec.label, path.name, line), **row}
