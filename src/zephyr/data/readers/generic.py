"""Any JSONL / JSON array / CSV (with header) / Parquet file, mapped to a record kind by `columns`.

`columns` maps a canonical field to the file's column, e.g. {question: q, choices: [a, b, c, d],
answer: label} for MCQA; fields already named canonically need no entry. An MCQA answer may be an
index, a letter or the text of the right choice. Our own loop (not datasets.load_dataset) so that a
malformed row is reported as file:line instead of failing the whole file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zephyr.data.config import Source
from zephyr.data.readers.common import csv_records, find, json_array, jsonl
from zephyr.data.schema import KINDS, LETTERS, row_id
from zephyr.data.stats import Bad, Stats
from zephyr.errors import ZephyrError

GIVES = KINDS  # every record kind
FORMATS = ("jsonl", "json", "csv", "parquet")


def fmt_of(path: Path, fmt: str | None) -> str:
    name = path.name.removesuffix(".gz").removesuffix(".bz2")
    fmt = fmt or Path(name).suffix.lstrip(".")
    if fmt not in FORMATS:
        raise ZephyrError(
            f"unknown format {fmt!r} for {path}; set `format:` to one of {', '.join(FORMATS)}"
        )
    return fmt


def files(spec: Source, root: Path) -> list[Path]:
    if not spec.path:
        raise ZephyrError(
            f"{spec.label}: a `file` source needs `path:` (jsonl, json, csv or parquet)"
        )
    path = find(root, spec.path, spec.label)
    fmt_of(path, spec.format)
    return [path]


def records(path: Path, fmt: str | None, stats: Stats) -> Iterator[tuple[int, Any]]:
    fmt = fmt_of(path, fmt)
    if fmt == "jsonl":
        yield from jsonl(path, stats)
    elif fmt == "json":
        yield from json_array(path, stats)
    elif fmt == "csv":
        header = None
        for line, rec in csv_records(path, stats):
            if header is None:
                header = rec
                continue
            yield line, {h: rec[i] if i < len(rec) else None for i, h in enumerate(header)}
    else:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        meta = pf.metadata
        stats.bytes_read += sum(
            meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)
        )
        if stats.bytes_read > stats.max_source_bytes:
            raise ZephyrError(
                f"{path}: source '{stats.name}' holds more than {stats.max_source_bytes} bytes "
                "uncompressed (data.max_source_bytes); check the file or raise the cap"
            )
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                i += 1
                yield i, rec  # parquet has no lines: the row number


def _get(obj: Any, columns: dict, key: str, required: bool = True) -> Any:
    col = columns.get(key, key)
    if not isinstance(obj, dict):
        raise Bad(f"expected an object, got {type(obj).__name__}")
    if obj.get(col) is None:
        if required:
            raise Bad(f"column '{col}' (for {key}) is missing")
        return None
    return obj[col]


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise Bad(f"{key} must be a string, got {type(value).__name__}")
    return value


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    ):
        raise Bad(f"{key} must be a list of {{role, content}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _answer(value: Any, choices: list[str]) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        idx = value
    elif isinstance(value, str) and value.strip() in LETTERS[: len(choices)]:
        idx = LETTERS.index(value.strip())
    elif isinstance(value, str) and value in choices:
        idx = choices.index(value)
    else:
        raise Bad(f"answer {value!r} is not an index, a letter or one of the choices")
    if not 0 <= idx < len(choices):
        raise Bad(f"answer index {idx} is out of range for {len(choices)} choices")
    return idx


def convert(obj: Any, kind: str, columns: dict, default_subject: str) -> dict:
    """One record -> a canonical row of `kind`."""
    if kind == "sft":
        if columns.get("messages") or (isinstance(obj, dict) and "messages" in obj):
            return {"messages": _messages(_get(obj, columns, "messages"), "messages")}
        row = {
            "instruction": _str(_get(obj, columns, "instruction"), "instruction"),
            "input": _str(_get(obj, columns, "input", required=False) or "", "input"),
            "output": _str(_get(obj, columns, "output"), "output"),
        }
        if system := _get(obj, columns, "system", required=False):
            row["system"] = _str(system, "system")
        return row
    if kind == "pref":
        prompt = _get(obj, columns, "prompt")
        prompt = prompt if isinstance(prompt, str) else _messages(prompt, "prompt")
        return {
            "prompt": prompt,
            "chosen": _str(_get(obj, columns, "chosen"), "chosen"),
            "rejected": _str(_get(obj, columns, "rejected"), "rejected"),
        }
    col = columns.get("choices", "choices")
    if isinstance(col, list):  # one column per choice
        choices = [_str(_get(obj, {}, c), f"choice column {c}") for c in col]
    else:
        choices = _get(obj, columns, "choices")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise Bad("choices must be a list of strings")
    if len(choices) < 2:
        raise Bad("an MCQA row needs at least two choices")
    subject = _get(obj, columns, "subject", required=False)
    return {
        "question": _str(_get(obj, columns, "question"), "question"),
        "choices": list(choices),
        "answer": _answer(_get(obj, columns, "answer"), list(choices)),
        "subject": str(subject) if subject else default_subject,
    }


def canonical(
    items: Iterable[tuple[int, Any]], spec: Source, path: Path | str, stats: Stats, kind: str
) -> Iterator[dict]:
    name = Path(path).name
    for line, obj in items:
        row = stats.parse(lambda o: convert(o, kind, spec.columns, spec.label), obj, path, line)
        if row is not None:
            keep = (
                obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
            )
            yield {"id": keep or row_id(spec.label, name, line), **row}


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    for path in paths:
        yield from canonical(records(path, spec.format, stats), spec, path, stats, kind)
