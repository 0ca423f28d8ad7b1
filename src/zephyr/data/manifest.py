"""manifest.json: per source rows read / kept / dropped by reason, the first malformed rows, the seed,
config, versions and input hashes (zephyr.provenance) and the sha256 of every output; and its table."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from zephyr.data.stats import Stats
from zephyr.io import read_json, sha256_file

NAME = "manifest.json"


def outputs(out: Path, names: list[str]) -> dict:
    result = {}
    for name in names:
        path = out / name
        with open(path, "rb") as f:
            rows = sum(1 for line in f if line.strip())
        result[name] = {"rows": rows, "sha256": sha256_file(path)}
    return result


def sources(stats: list[Stats]) -> dict:
    by_kind: dict[str, dict] = {}
    for s in stats:
        by_kind.setdefault(s.kind, {})[s.name] = s.to_dict()
    return by_kind


def load(out: Path) -> dict:
    return read_json(Path(out) / NAME)


def show(manifest: dict, console: Console | None = None) -> None:
    """Rich tables: rows per source and drop reason, decontamination per eval set, the outputs."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: a fixed width instead of 80 columns
            console = Console(width=140)
    table = Table(title=f"data manifest (seed {manifest.get('seed')})")
    for col in ("kind", "source", "read", "kept", "train", "val", "dropped (reason: rows)", "pii"):
        table.add_column(
            col, justify="right" if col in ("read", "kept", "train", "val") else "left"
        )
    for kind, by_source in manifest.get("sources", {}).items():
        for name, s in by_source.items():
            dropped = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "-"
            pii = ", ".join(f"{k}: {v}" for k, v in s.get("pii_redacted", {}).items()) or "-"
            table.add_row(
                kind,
                name,
                str(s["read"]),
                str(s["kept"]),
                str(s["train"]),
                str(s["val"]),
                dropped,
                pii,
            )
    console.print(table)
    dec = manifest.get("decontam") or {}
    if dec.get("eval_sets"):
        t = Table(title=f"decontamination ({dec['ngram']}-grams)")
        for col in ("eval set", "docs", "n-grams", "removed sft", "removed pref", "removed mcqa"):
            t.add_column(col, justify="left" if col == "eval set" else "right")
        for name, e in dec["eval_sets"].items():
            r = e["removed"]
            t.add_row(
                name,
                str(e["docs"]),
                str(e["ngrams"]),
                *(str(r.get(k, 0)) for k in ("sft", "pref", "mcqa")),
            )
        console.print(t)
    if held := manifest.get("heldout"):
        counts = ", ".join(f"{k}: {v}" for k, v in held["per_source"].items())
        console.print(f"held-out pairs ({held['file']}, out of pref_train/val): {counts}")
    t = Table(title="outputs")
    for col in ("file", "rows", "sha256"):
        t.add_column(col)
    for name, o in manifest.get("outputs", {}).items():
        t.add_row(name, str(o["rows"]), o["sha256"][:16])
    console.print(t)
    for kind, by_source in manifest.get("sources", {}).items():
        for name, s in by_source.items():
            for ex in s.get("malformed_examples", []):
                console.print(
                    f"[yellow]malformed[/] {kind}/{name}: {ex['file']}:{ex['line']}: {ex['reason']}"
                )
