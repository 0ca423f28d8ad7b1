"""Anthropic HH-RLHF gzip JSONL (two full transcripts) -> preference rows with a multi-turn prompt.

The shared history (every turn before the last `Assistant:`) becomes the prompt messages; the last
assistant turn of each transcript becomes `chosen` / `rejected`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, jsonl, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats

GIVES = ("pref",)
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
ROLES = {"Human": "user", "Assistant": "assistant"}
MARK = "\n\nAssistant:"


def files(spec: Source, root: Path) -> list[Path]:
    if spec.path:
        return [find(root, spec.path, spec.label)]
    subsets = [spec.subset] if spec.subset and spec.subset not in ("all", "both") else list(SUBSETS)
    return [find(root, f"hh-rlhf/{s}/{spec.split or 'test'}.jsonl.gz", spec.label) for s in subsets]


def turns(transcript: str) -> list[dict]:
    parts = TURN.split(transcript)
    if parts[0].strip():
        raise Bad("transcript does not start with a 'Human:' turn")
    return [
        {"role": ROLES[r], "content": c.strip()}
        for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]


def split_pair(chosen: str, rejected: str) -> dict:
    """Shared prompt turns (up to the last `Assistant:` both transcripts share) + the two replies."""
    shared = os.path.commonprefix([chosen, rejected])
    cut = chosen.rfind(MARK, 0, len(shared))
    if cut < 0:
        raise Bad("chosen and rejected share no 'Assistant:' turn")
    prompt = turns(chosen[:cut])
    if not prompt or prompt[-1]["role"] != "user":
        raise Bad("the shared prompt does not end with a 'Human:' turn")
    replies = [t[cut + len(MARK) :].strip() for t in (chosen, rejected)]
    if any("\n\nHuman:" in r or "\n\nAssistant:" in r for r in replies):
        raise Bad("a final reply holds a further 'Human:' or 'Assistant:' turn")
    return {"prompt": prompt, "chosen": replies[0], "rejected": replies[1]}


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        for line, obj in jsonl(path, stats):
            parse = lambda o: split_pair(text(o, "chosen"), text(o, "rejected"))  # noqa: E731
            if (row := stats.parse(parse, obj, path, line)) is not None:
                yield {"id": row_id(spec.label, str(path.parent.name), line), **row}
