"""Alpaca-style JSON arrays (`instruction`, `input`, `output`, LIMA's `history` of [user, assistant]
pairs) -> SFT rows; rows with history become `messages`. Serves lima, code_alpaca and any alpaca file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.common import find, json_array, text
from zephyr.data.schema import row_id
from zephyr.data.stats import Bad, Stats
from zephyr.errors import ZephyrError

GIVES = ("sft",)
DEFAULTS = {
    "lima": "lima/lima.json",
    "code_alpaca": "code-alpaca/code_alpaca_2k.json",
    "code_alpaca/new": "code-alpaca/new_codealpaca.json",
}


def files(spec: Source, root: Path) -> list[Path]:
    key = spec.source + (f"/{spec.subset}" if spec.subset and spec.subset != "2k" else "")
    rel = spec.path or DEFAULTS.get(key)
    if rel is None:
        raise ZephyrError(
            f"{spec.label}: give the alpaca JSON file as `path:` (relative to the data root)"
        )
    return [find(root, rel, spec.label)]


def parse(obj: dict) -> dict:
    instruction, output = text(obj, "instruction"), text(obj, "output")
    inp = text(obj, "input", required=False)
    history = obj.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(t, str) for t in h) for h in history
    ):
        raise Bad("'history' must be a list of [user, assistant] string pairs")
    if not history:
        return {"instruction": instruction, "input": inp, "output": output}
    user = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    messages = []
    for u, a in history:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {
        "messages": messages
        + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    }


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        for line, obj in json_array(path, stats):
            if (row := stats.parse(parse, obj, path, line)) is not None:
                yield {"id": row_id(spec.label, path.name, line), **row}
