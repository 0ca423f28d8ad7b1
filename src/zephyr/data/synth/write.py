"""Write synthetic kinds to <out>/<kind>.jsonl atomically, with a manifest of counts and hashes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.progress import Progress

from zephyr.data import synth
from zephyr.errors import ZephyrError
from zephyr.io import sha256_file, write_json, write_jsonl
from zephyr.provenance import record


def write_synth(
    out: str | Path,
    n_per_family: int,
    seed: int,
    families: list[str] | None = None,
    kinds: list[str] | None = None,
) -> dict:
    """Generate each kind for each family, write `<kind>.jsonl` and `manifest.json`; return it."""
    out = Path(out)
    kinds = list(kinds or synth.KINDS)
    for kind in kinds:  # fail on a bad kind, family or count before any work
        families = synth.validate(kind, n_per_family, families)
    if not kinds:
        raise ZephyrError("--kinds is empty: give some of " + ",".join(synth.KINDS))
    start = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    hashes: dict[str, str] = {}
    with Progress(transient=True) as bar:
        task = bar.add_task("synthetic data", total=len(kinds) * len(families))
        for kind in kinds:
            rows = []
            for family in families:
                bar.update(task, description=f"{kind} {family}")
                rows += synth.generate(kind, n_per_family, seed, [family])
                bar.advance(task)
            path = out / f"{kind}.jsonl"
            write_jsonl(path, rows)
            counts[kind] = dict(Counter(r["family"] for r in rows))
            hashes[path.name] = sha256_file(path)
    config = {"n_per_family": n_per_family, "seed": seed, "families": families, "kinds": kinds}
    manifest = {
        "seed": seed,
        "counts": counts,
        "sha256": hashes,
        "seconds": round(time.perf_counter() - start, 2),
        "test_split": f"sha256(family:key) % {synth.TEST_SHARE} == 0, plus text dedup",
        "provenance": record(config),
    }
    write_json(out / "manifest.json", manifest)
    return manifest
