"""The data build, top to bottom: recipe section -> eval-set index -> per kind and source: read, clean,
decontaminate, cap -> shuffle and split -> JSONL outputs + manifest.json (all written atomically)."""

from __future__ import annotations

import csv
import dataclasses
import time
import zlib
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from zephyr import provenance
from zephyr.config import from_dict
from zephyr.data import manifest, mixture, trl_rows
from zephyr.data.clean import Seen, clean, redact_row
from zephyr.data.config import EVAL_SETS, DataConfig, Source
from zephyr.data.decontam import Index, file_texts
from zephyr.data.readers import SYNTH, reader
from zephyr.data.readers.common import find
from zephyr.data.stats import Stats
from zephyr.data.text import question_key, row_fields
from zephyr.errors import ZephyrError
from zephyr.io import write_json, write_jsonl

KINDS = ("sft", "pref", "mcqa")
# the eval sets decontamination knows by name: what the eval stage scores
EVAL_SPECS = {
    "gsm8k_test": Source("gsm8k", split="test", name="gsm8k_test"),
    "arc_test": Source("arc", split="test", name="arc_test"),  # Challenge and Easy
    "mmlu_test": Source("mmlu", split="test", name="mmlu_test"),
    "hellaswag_val": Source("hellaswag", split="val", name="hellaswag_val"),
}
assert set(EVAL_SPECS) == set(EVAL_SETS)


def parse_config(section: dict, where: str = "recipe data") -> DataConfig:
    cfg = from_dict(DataConfig, section, where)
    if not 0 <= cfg.val_fraction < 1:
        raise ZephyrError(f"{where}.val_fraction must be in [0, 1); got {cfg.val_fraction}")
    if cfg.decontam.ngram < 1:
        raise ZephyrError(
            f"{where}.decontam.ngram must be a positive number of words; got {cfg.decontam.ngram}"
        )
    for name in cfg.decontam.against:
        if name not in EVAL_SPECS:
            raise ZephyrError(
                f"{where}.decontam.against: unknown eval set '{name}'; known: {', '.join(EVAL_SPECS)}"
            )
    for kind in KINDS:
        labels = [s.label for s in getattr(cfg, kind)]
        if dup := {x for x in labels if labels.count(x) > 1}:
            raise ZephyrError(
                f"{where}.{kind}: source '{dup.pop()}' is listed twice; give one of them a `name:`"
            )
        for i, spec in enumerate(getattr(cfg, kind)):
            if spec.source == SYNTH:
                if cfg.synth is None:
                    raise ZephyrError(
                        f"{where}.{kind}[{i}] uses synth but {where}.synth is not set; add `synth: {{}}`"
                    )
            else:
                reader(spec, kind, f"{where}.{kind}[{i}]")
            if spec.cap is not None and spec.cap < 0:
                raise ZephyrError(f"{where}.{kind}[{i}].cap must be >= 0; got {spec.cap}")
    return cfg


def input_files(cfg: DataConfig, root: Path) -> list[Path]:
    """Every local file the build reads (missing ones raise ZephyrError): for hashing and provenance."""
    paths: list[Path] = []
    for kind in KINDS:
        for spec in getattr(cfg, kind):
            if spec.source != SYNTH:
                paths += reader(spec, kind, f"data.{kind}").files(spec, root)
    for name in cfg.decontam.against:
        spec = EVAL_SPECS[name]
        paths += reader(spec, "mcqa" if name != "gsm8k_test" else "sft", name).files(spec, root)
    paths += [find(root, f, "decontam.files") for f in cfg.decontam.files]
    return list(dict.fromkeys(paths))


class Synth:
    """zephyr.data.synth.generate, called once per kind."""

    def __init__(self, cfg):
        self.cfg, self.cache = cfg, {}

    def rows(
        self, kind: str, n_per_family: int | None = None, seed: int | None = None
    ) -> list[dict]:
        try:
            from zephyr.data.synth import generate
        except ImportError as e:
            raise ZephyrError(
                f"the synthetic generator (zephyr.data.synth) is not available: {e}"
            ) from None
        key = (kind, n_per_family, seed)
        if key not in self.cache:
            c = self.cfg
            self.cache[key] = generate(
                kind, n_per_family or c.n_per_family, c.seed if seed is None else seed, c.families
            )
        return [dict(r) for r in self.cache[key]]


def eval_index(
    cfg: DataConfig, root: Path, strict: bool, step=lambda what: None
) -> tuple[Index, dict]:
    index = Index(cfg.decontam.ngram, cfg.decontam.max_doc_freq)
    info: dict[str, dict] = {}
    for name in cfg.decontam.against:
        step(f"eval set {name}")
        spec = EVAL_SPECS[name]
        kind = "sft" if name == "gsm8k_test" else "mcqa"
        mod = reader(spec, kind, name)
        stats = Stats(name, kind, strict)
        paths = mod.files(spec, root)
        index.add(name, [row_fields(r) for r in rows_of(mod, spec, paths, stats, kind)])
        info[name] = {"files": [str(p) for p in paths], "malformed": stats.dropped["malformed"]}
    for f in cfg.decontam.files:
        step(f"eval file {f}")
        path = find(root, f, "decontam.files")
        try:
            texts = file_texts(path)
        except (
            ValueError,
            OSError,
            EOFError,
            csv.Error,
            zlib.error,
        ) as e:  # JSON, encoding, archive
            raise ZephyrError(
                f"decontam file {path} could not be read ({e}); give JSONL, JSON, CSV or text"
            ) from None
        index.add(str(f), texts)
        info[str(f)] = {"files": [str(path)], "malformed": 0}
    index.build()
    for name in info:
        info[name].update(
            docs=index.docs[name],
            ngrams=index.ngrams[name],
            template_ngrams=index.templates[name],
            removed={},
        )
    return index, info


def rows_of(mod, spec: Source, paths: list[Path], stats: Stats, kind: str) -> list[dict]:
    """All rows of a reader; an unreadable file (truncated archive, bad encoding) is one sentence."""
    try:
        return list(mod.rows(spec, paths, stats, kind))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as e:
        files = ", ".join(str(p) for p in paths)
        raise ZephyrError(
            f"could not read {files} ({type(e).__name__}: {e}); check or replace the file"
        ) from None


def read_source(
    spec: Source, kind: str, root: Path, synth: Synth | None, strict: bool
) -> tuple[Stats, list[dict]]:
    """All rows of one source, labelled with its name, and its stats (malformed rows counted)."""
    stats = Stats(spec.label, kind, strict)
    if spec.source == SYNTH:
        raw = synth.rows(kind)
        stats.files = ["zephyr.data.synth"]
    else:
        mod = reader(spec, kind, f"data.{kind}")
        paths = mod.files(spec, root)
        stats.files = stats.files or [str(p) for p in paths]
        raw = rows_of(mod, spec, paths, stats, kind)
    stats.read = len(raw) + sum(stats.dropped.values())  # malformed rows and ties never became rows
    for r in raw:
        r["source"] = spec.label
    return stats, raw


def decontaminate(
    kept: list[tuple[Stats, list[dict]]], index: Index, info: dict, kind: str
) -> None:
    """Drop (in place) every row sharing an n-gram with an eval set: one batched pass per kind."""
    hits = iter(index.find([row_fields(r) for _, rows in kept for r in rows]))
    for i, (stats, rows) in enumerate(kept):
        keep = []
        for r in rows:
            if (hit := next(hits)) is None:
                keep.append(r)
            else:
                stats.dropped[f"decontam:{hit}"] += 1
                info[hit]["removed"][kind] = info[hit]["removed"].get(kind, 0) + 1
        kept[i] = (stats, keep)


def build(
    cfg: DataConfig, root: Path, out: Path, seed: int, console: Console | None = None
) -> dict:
    """Build every output into `out`; return the manifest (also written to out/manifest.json)."""
    console = console or Console()
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    inputs = input_files(cfg, root)  # fails early, before any work, on a missing file
    n_steps = (
        len(cfg.decontam.against)
        + len(cfg.decontam.files)
        + sum(len(getattr(cfg, k)) for k in KINDS)
    )
    with Progress(*Progress.get_default_columns(), console=console, transient=True) as bar:
        task = bar.add_task("data", total=n_steps)

        def step(what: str) -> None:
            bar.update(task, description=what)
            bar.advance(task)

        index, dec_info = (
            eval_index(cfg, root, cfg.strict, step)
            if cfg.decontam.against or cfg.decontam.files
            else (None, {})
        )
        synth = Synth(cfg.synth) if cfg.synth is not None else None
        # the generator derives its test set from a disjoint seed stream; any training row asking
        # the same (normalised) question is dropped as well, whatever its source
        n_test = cfg.synth.test_n_per_family if synth else 0
        test = synth.rows("test", n_test) if n_test > 0 else []
        test_keys = {question_key(r) for r in test}
        all_stats: list[Stats] = []
        written: list[str] = []
        for kind in KINDS:
            specs: list[Source] = getattr(cfg, kind)
            if not specs:
                continue
            seen = Seen()  # duplicates are found across the sources of a kind
            kept: list[tuple[Stats, list[dict]]] = []
            for spec in specs:
                step(f"{kind} {spec.label}")
                stats, raw = read_source(spec, kind, root, synth, cfg.strict)
                rows = clean(raw, kind, stats, seen, cfg.max_chars, cfg.unsafe)
                if test_keys:
                    n = len(rows)
                    rows = [r for r in rows if question_key(r) not in test_keys]
                    if n > len(rows):
                        stats.dropped["decontam:synth_test"] += n - len(rows)
                kept.append((stats, rows))
                all_stats.append(stats)
            if index is not None:
                decontaminate(kept, index, dec_info, kind)
            parts = []
            for (stats, rows), spec in zip(kept, specs, strict=True):
                taken = mixture.take(rows, spec.cap, seed, spec.label)
                if len(rows) > len(taken):
                    stats.dropped["over_cap"] += len(rows) - len(taken)
                if cfg.pii:  # after the caps: only rows that reach an output are scanned
                    taken = [redact_row(r, stats.pii) for r in taken]
                parts.append(taken)
            train, val = mixture.split(parts, cfg.val_fraction, seed)
            for stats, _ in kept:
                stats.train = sum(r["source"] == stats.name for r in train)
                stats.val = sum(r["source"] == stats.name for r in val)
                stats.kept = stats.train + stats.val
                console.print(
                    f"  {kind:4s} {stats.name:32s} read {stats.read:6d}  kept {stats.kept:6d}  "
                    f"dropped {sum(stats.dropped.values()):6d}"
                )
            write_jsonl(out / f"{kind}_train.jsonl", trl_rows.written(kind, train))
            write_jsonl(out / f"{kind}_val.jsonl", trl_rows.written(kind, val))
            written += [f"{kind}_train.jsonl", f"{kind}_val.jsonl"]
    extra = {}
    if test:
        for r in test:
            r.setdefault("source", SYNTH)
        write_jsonl(out / "synth_test.jsonl", test)
        written.append("synth_test.jsonl")
        extra["synth_test_overlap"] = overlap(test, out, written)
    for e in dec_info.values():
        e["removed"]["total"] = sum(e["removed"].values())
    result = {
        "seed": seed,
        "data_root": str(root),
        "seconds": round(time.time() - t0, 2),
        "sources": manifest.sources(all_stats),
        "decontam": {
            "ngram": cfg.decontam.ngram,
            "max_doc_freq": cfg.decontam.max_doc_freq,
            "eval_sets": dec_info,
        },
        "outputs": manifest.outputs(out, written),
        **extra,
        "provenance": provenance.record(dataclasses.asdict(cfg), inputs=inputs),
    }
    write_json(out / manifest.NAME, result)
    return result


def overlap(test: list[dict], out: Path, written: list[str]) -> int:
    """How many synthetic test questions also appear (normalised) in another output: should be 0."""
    from zephyr.io import read_jsonl

    train = {
        question_key(r)
        for name in written
        if name != "synth_test.jsonl"
        for r in read_jsonl(out / name)
    }
    return sum(question_key(r) in train for r in test)
