"""ShareGPT preference JSON (LLaMA-Factory dpo_en_demo): `conversations` + `chosen`/`rejected` turns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, json_array, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats

GIVES = ("pref",)
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def files(spec: Source, root: Path) -> list[Path]:
    return [find(root, spec.path or "llamafactory-dpo-en-demo/dpo_en_demo.json", spec.label)]


def message(turn: object) -> dict:
    if not isinstance(turn, dict) or turn.get("from") not in ROLES:
        raise Bad(f"a turn needs 'from' in {sorted(ROLES)} and 'value'; got {str(turn)[:60]!r}")
    return {"role": ROLES[turn["from"]], "content": text(turn, "value")}


def parse(obj: dict) -> dict:
    conv = obj.get("conversations") if isinstance(obj, dict) else None
    if not isinstance(conv, list) or not conv:
        raise Bad("'conversations' must be a non-empty list of turns")
    prompt = [message(t) for t in conv]
    if prompt[-1]["role"] != "user":
        raise Bad("the last turn of 'conversations' must be from the human")
    return {
        "prompt": prompt,
        "chosen": message(obj.get("chosen"))["content"],
        "rejected": message(obj.get("rejected"))["content"],
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        for line, obj in json_array(path, stats):
            if (row := stats.parse(parse, obj, path, line)) is not None:
                yield {"id": row_id(spec.label, path.name, line), **row}
