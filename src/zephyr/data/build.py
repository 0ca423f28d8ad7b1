"""The data build, top to bottom: recipe section -> eval-set index -> per kind and source: read, clean,
decontaminate, cap -> shuffle and split -> JSONL outputs + manifest.json (all written atomically)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import re
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from zephyr import provenance
from zephyr.config import from_dict
from zephyr.data import manifest, mcqa_sft, mixture, trl_rows
from zephyr.data.clean import Seen, clean, redact_row
from zephyr.data.config import EVAL_SETS, DataConfig, Source
from zephyr.data.decontam import Index, file_texts
from zephyr.data.readers import SYNTH, reader
from zephyr.data.readers.common import find
from zephyr.data.schema import KINDS, prompt_messages
from zephyr.data.stats import Stats
from zephyr.data.text import question_key, row_fields, words
from zephyr.errors import ZephyrError
from zephyr.io import atomic_dir, write_json, write_jsonl

HELDOUT = "pref_heldout.jsonl"  # preference pairs kept out of training, for reward accuracy
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
    for key in ("max_row_chars", "max_source_bytes"):
        if getattr(cfg, key) < 1:
            raise ZephyrError(f"{where}.{key} must be a positive number; got {getattr(cfg, key)}")
    for kind in (*KINDS, "heldout"):
        labels = [s.label for s in getattr(cfg, kind)]
        if dup := {x for x in labels if labels.count(x) > 1}:
            raise ZephyrError(
                f"{where}.{kind}: source '{dup.pop()}' is listed twice; give one of them a `name:`"
            )
        for i, spec in enumerate(getattr(cfg, kind)):
            if spec.source == mcqa_sft.SOURCE and kind == "sft":
                if not cfg.mcqa:
                    raise ZephyrError(
                        f"{where}.sft[{i}] (source: mcqa) takes this build's MCQA rows, but "
                        f"{where}.mcqa lists no source; add MCQA sources (arc, mmlu, sciq, ...)"
                    )
            elif spec.source == SYNTH:
                if cfg.synth is None:
                    raise ZephyrError(
                        f"{where}.{kind}[{i}] uses synth but {where}.synth is not set; add `synth: {{}}`"
                    )
            else:
                reader(spec, "pref" if kind == "heldout" else kind, f"{where}.{kind}[{i}]")
            if spec.cap is not None and spec.cap < 0:
                raise ZephyrError(f"{where}.{kind}[{i}].cap must be >= 0; got {spec.cap}")
    return cfg


def input_files(cfg: DataConfig, root: Path) -> list[Path]:
    """Every local file the build reads (missing ones raise ZephyrError): for hashing and provenance."""
    paths: list[Path] = []
    for kind in (*KINDS, "heldout"):
        for spec in getattr(cfg, kind):
            if spec.source == SYNTH or (spec.source == mcqa_sft.SOURCE and kind == "sft"):
                continue
            read_as = "pref" if kind == "heldout" else kind
            paths += reader(spec, read_as, f"data.{kind}").files(spec, root)
    for name in cfg.decontam.against:
        spec = EVAL_SPECS[name]
        paths += reader(spec, "mcqa" if name != "gsm8k_test" else "sft", name).files(spec, root)
    paths += [find(root, f, "decontam.files") for f in cfg.decontam.files]
    return list(dict.fromkeys(paths))


class SynthRows:
    """The synthetic rows of one build: zephyr.data.synth.generate, called once per kind."""

    def __init__(self, cfg, calculator: bool = False):
        self.cfg, self.cache, self.calculator = cfg, {}, calculator

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
        if self.calculator:  # worked solutions carry <<expr=result>> annotations
            from zephyr.tutor.calculator import annotate_row

            return [annotate_row(r) for r in self.cache[key]]
        return [dict(r) for r in self.cache[key]]


def eval_index(cfg: DataConfig, root: Path, step=lambda what: None) -> tuple[Index, dict]:
    index = Index(cfg.decontam.ngram, cfg.decontam.max_doc_freq)
    info: dict[str, dict] = {}
    for name in cfg.decontam.against:
        step(f"eval set {name}")
        spec = EVAL_SPECS[name]
        kind = "sft" if name == "gsm8k_test" else "mcqa"
        mod = reader(spec, kind, name)
        stats = new_stats(name, kind, cfg)
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
            RecursionError,
        ) as e:  # JSON, encoding, archive, nesting
            raise ZephyrError(
                f"decontam file {path} could not be read ({type(e).__name__}: {e}); give JSONL, "
                "JSON, CSV or text"
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


def rows_of(
    mod, spec: Source, paths: list[Path], stats: Stats, kind: str, calc: bool = False
) -> list[dict]:
    """All rows of a reader; an unreadable file (truncated archive, bad encoding) is one sentence."""
    extra = {"keep_calc": True} if calc and spec.source == "gsm8k" else {}
    try:
        return list(mod.rows(spec, paths, stats, kind, **extra))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as e:
        files = ", ".join(str(p) for p in paths)
        raise ZephyrError(
            f"could not read {files} ({type(e).__name__}: {e}); check or replace the file"
        ) from None


def read_source(
    spec: Source,
    kind: str,
    root: Path,
    synth: SynthRows | None,
    cfg: DataConfig,
    stats_kind: str = "",
) -> tuple[Stats, list[dict]]:
    """All rows of one source, labelled with its name, and its stats (malformed rows counted)."""
    stats = new_stats(spec.label, stats_kind or kind, cfg)
    if spec.source == SYNTH:
        raw = synth.rows(kind)
        stats.files = ["zephyr.data.synth"]
    else:
        mod = reader(spec, kind, f"data.{kind}")
        paths = mod.files(spec, root)
        stats.files = stats.files or [str(p) for p in paths]
        raw = rows_of(mod, spec, paths, stats, kind, cfg.calculator)
    stats.read = len(raw) + sum(stats.dropped.values())  # malformed rows and ties never became rows
    for r in raw:
        r["source"] = spec.label
    return stats, raw


def new_stats(name: str, kind: str, cfg: DataConfig) -> Stats:
    return Stats(
        name,
        kind,
        cfg.strict,
        max_row_chars=cfg.max_row_chars,
        max_source_bytes=cfg.max_source_bytes,
    )


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


def drop(rows: list[dict], stats: Stats, reason: str, keys: set[str], key) -> list[dict]:
    """The rows whose key(row) is not in `keys`; the others counted under `reason`."""
    if not keys:
        return rows
    keep = [r for r in rows if key(r) not in keys]
    if len(rows) > len(keep):
        stats.dropped[reason] += len(rows) - len(keep)
    return keep


@dataclasses.dataclass
class Run:
    """What every kind of one build shares."""

    cfg: DataConfig
    root: Path
    seed: int
    synth: SynthRows | None
    index: Index | None
    dec_info: dict
    test_keys: set[str]
    step: Callable[[str], None]
    stats: list[Stats] = dataclasses.field(default_factory=list)
    mcqa: tuple[list[dict], list[dict]] = ([], [])  # this build's MCQA train / val rows
    heldout_keys: set[str] = dataclasses.field(default_factory=set)

    def gather(self, kind: str, specs: list[Source], stats_kind: str = "") -> list:
        """Read, clean, decontaminate every source of a kind: [(stats, rows)], in list order."""
        seen = Seen()  # duplicates are found across the sources of a kind
        kept: list[tuple[Stats, list[dict]]] = []
        for spec in specs:
            self.step(f"{stats_kind or kind} {spec.label}")
            if spec.source == mcqa_sft.SOURCE and kind == "sft":
                stats, raw = new_stats(spec.label, kind, self.cfg), mcqa_sft.sft_rows(*self.mcqa)[0]
                stats.files, stats.read = ["mcqa_train.jsonl", "mcqa_val.jsonl"], len(raw)
                for r in raw:
                    r["source"] = spec.label
            else:
                stats, raw = read_source(spec, kind, self.root, self.synth, self.cfg, stats_kind)
            rows = clean(raw, kind, stats, seen, self.cfg.max_chars, self.cfg.unsafe)
            rows = drop(rows, stats, "decontam:synth_test", self.test_keys, question_key)
            if kind == "pref":
                rows = drop(rows, stats, "heldout_prompt", self.heldout_keys, first_user_key)
            kept.append((stats, rows))
            self.stats.append(stats)
        if self.index is not None:
            decontaminate(kept, self.index, self.dec_info, stats_kind or kind)
        return kept

    def capped(self, kept: list, specs: list[Source], prefix: str = "") -> list[list[dict]]:
        """Per source: the seeded first N_i = min(cap, S_i) rows, PII redacted."""
        parts = []
        for (stats, rows), spec in zip(kept, specs, strict=True):
            taken = mixture.take(rows, spec.cap, self.seed, prefix + spec.label)
            if len(rows) > len(taken):
                stats.dropped["over_cap"] += len(rows) - len(taken)
            if self.cfg.pii:  # after the caps: only rows that reach an output are scanned
                taken = [redact_row(r, stats.pii) for r in taken]
            parts.append(taken)
        return parts

    def kind(self, kind: str, console: Console) -> tuple[list[dict], list[dict]]:
        """The train and validation rows of one record kind."""
        specs: list[Source] = getattr(self.cfg, kind)
        kept = self.gather(kind, specs)
        parts = self.capped(kept, specs)
        derived = [s.source == mcqa_sft.SOURCE and kind == "sft" for s in specs]
        train, val = mixture.split(
            [p for p, d in zip(parts, derived, strict=True) if not d],
            self.cfg.val_fraction,
            self.seed,
        )
        if any(derived):  # MCQA validation rows stay validation rows
            val_ids = mcqa_sft.sft_rows(*self.mcqa)[1]
            rows = [r for p, d in zip(parts, derived, strict=True) if d for r in p]
            train = mixture.shuffled(train + [r for r in rows if r["id"] not in val_ids], self.seed)
            val = mixture.shuffled(val + [r for r in rows if r["id"] in val_ids], self.seed)
        for stats, _ in kept:
            stats.train = sum(r["source"] == stats.name for r in train)
            stats.val = sum(r["source"] == stats.name for r in val)
            stats.kept = stats.train + stats.val
            console.print(
                f"  {kind:4s} {stats.name:32s} read {stats.read:6d}  kept {stats.kept:6d}  "
                f"dropped {sum(stats.dropped.values()):6d}"
            )
        return train, val

    def heldout(self) -> tuple[list[dict], dict]:
        """The held-out preference pairs and their manifest entry; their first user turns are
        kept in `heldout_keys` so that no training pair shares one."""
        specs = self.cfg.heldout
        kept = self.gather("pref", specs, stats_kind="heldout")
        self.stats = [s for s in self.stats if s.kind != "heldout"]  # listed under `heldout`
        parts = self.capped(kept, specs, prefix="heldout/")
        rows = [r for p in parts for r in p]
        for (stats, _), part in zip(kept, parts, strict=True):
            stats.kept = len(part)
        self.heldout_keys = {first_user_key(r) for r in rows}
        info = {
            "file": HELDOUT,
            "rule": "no pair in pref_train/pref_val shares its first user turn (normalised) with a "
            "held-out pair",
            "per_source": {stats.name: stats.kept for stats, _ in kept},
            "ids": [r["id"] for r in rows],
            "sources": {stats.name: stats.to_dict() for stats, _ in kept},
        }
        return rows, info


def first_user_key(row: dict) -> str:
    """The normalised first user turn of a preference row: held-out prompts are matched on it, so
    a longer conversation that starts the same way stays out of training too."""
    msgs = prompt_messages(row)
    return " ".join(words(next((m["content"] for m in msgs if m["role"] == "user"), "")))


OUTPUT_NAME = re.compile(r"[\w.-]+\.jsonl|manifest\.json|stage\.json|\..+")


def check_out(out: Path) -> None:
    """Refuse to replace a folder holding anything but an earlier build (--out . would delete it)."""
    if out.exists() and not out.is_dir():
        raise ZephyrError(f"--out {out} is a file; give a folder for the data build")
    if not out.is_dir() or (out / manifest.NAME).exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if not OUTPUT_NAME.fullmatch(p.name))
    if foreign:
        raise ZephyrError(
            f"{out} holds files that are not a data build ({', '.join(foreign[:3])}); the build "
            "replaces the whole folder, so give a new or empty one"
        )


def build(
    cfg: DataConfig, root: Path, out: Path, seed: int, console: Console | None = None
) -> dict:
    """Build every output into a fresh temporary folder swapped in for `out` (nothing of an earlier
    build survives); return the manifest (also written to out/manifest.json)."""
    console = console or Console()
    check_out(out)
    inputs = input_files(cfg, root)  # fails early, before any work, on a missing file
    with atomic_dir(out) as tmp:
        return build_into(cfg, root, tmp, seed, console, inputs)


def build_into(
    cfg: DataConfig, root: Path, out: Path, seed: int, console: Console, inputs: list[Path]
) -> dict:
    """Every output of the build into the empty folder `out`, then its manifest."""
    t0 = time.time()
    with progress_steps(console, n_steps(cfg)) as step:
        run, test = start_run(cfg, root, seed, step)
        written, extra = write_kinds(run, out, console)
    if test:
        written.append(write_synth_test(test, out))
        extra["synth_test_overlap"] = overlap(test, out, written)
    result = manifest_of(run, out, written, extra, inputs, t0)
    write_json(out / manifest.NAME, result)
    return result


def n_steps(cfg: DataConfig) -> int:
    """How many steps the progress bar counts: each eval set and file, then each source."""
    sources = sum(len(getattr(cfg, k)) for k in (*KINDS, "heldout"))
    return len(cfg.decontam.against) + len(cfg.decontam.files) + sources


@contextlib.contextmanager
def progress_steps(console: Console, total: int) -> Iterator[Callable[[str], None]]:
    """A transient progress bar; yields `step(what)`, which names and counts the next step."""
    with Progress(*Progress.get_default_columns(), console=console, transient=True) as bar:
        task = bar.add_task("data", total=total)

        def step(what: str) -> None:
            bar.update(task, description=what)
            bar.advance(task)

        yield step


def start_run(
    cfg: DataConfig, root: Path, seed: int, step: Callable[[str], None]
) -> tuple[Run, list[dict]]:
    """What every kind shares (the eval-set index, the synthetic rows), and the synthetic test rows."""
    has_evals = cfg.decontam.against or cfg.decontam.files
    index, dec_info = eval_index(cfg, root, step) if has_evals else (None, {})
    synth = SynthRows(cfg.synth, cfg.calculator) if cfg.synth is not None else None
    # the generator derives its test set from a disjoint seed stream; any training row asking
    # the same (normalised) question is dropped as well, whatever its source
    n_test = cfg.synth.test_n_per_family if synth else 0
    test = synth.rows("test", n_test) if n_test > 0 else []
    run = Run(cfg, root, seed, synth, index, dec_info, {question_key(r) for r in test}, step)
    return run, test


def write_kinds(run: Run, out: Path, console: Console) -> tuple[list[str], dict]:
    """Each kind's train and val JSONL (the held-out pairs in one file), in build order; returns
    the file names written and the manifest's extra entries."""
    written: list[str] = []
    extra: dict = {}
    for kind in build_order(run.cfg):
        if not getattr(run.cfg, kind):
            continue
        if kind == "heldout":
            rows, extra["heldout"] = run.heldout()
            write_jsonl(out / HELDOUT, trl_rows.written("pref", rows))
            written.append(HELDOUT)
            continue
        train, val = run.kind(kind, console)
        if kind == "mcqa":  # an SFT source made of MCQA rows reads them next
            run.mcqa = (train, val)
        for split, rows in (("train", train), ("val", val)):
            write_jsonl(out / f"{kind}_{split}.jsonl", trl_rows.written(kind, rows))
            written.append(f"{kind}_{split}.jsonl")
    return written, extra


def write_synth_test(test: list[dict], out: Path) -> str:
    """The synthetic held-out rows as synth_test.jsonl; returns the file name."""
    for r in test:
        r.setdefault("source", SYNTH)
    write_jsonl(out / "synth_test.jsonl", test)
    return "synth_test.jsonl"


def manifest_of(
    run: Run, out: Path, written: list[str], extra: dict, inputs: list[Path], t0: float
) -> dict:
    """manifest.json: seed, sources with their drops, decontamination, outputs, provenance."""
    for e in run.dec_info.values():
        e["removed"]["total"] = sum(e["removed"].values())
    cfg = run.cfg
    return {
        "seed": run.seed,
        "data_root": str(run.root),
        "seconds": round(time.time() - t0, 2),
        "sources": manifest.sources(sorted(run.stats, key=lambda s: KINDS.index(s.kind))),
        "decontam": {
            "ngram": cfg.decontam.ngram,
            "max_doc_freq": cfg.decontam.max_doc_freq,
            "eval_sets": run.dec_info,
        },
        "outputs": manifest.outputs(out, sorted(written, key=output_order)),
        **extra,
        "provenance": provenance.record(dataclasses.asdict(cfg), inputs=inputs),
    }


def build_order(cfg: DataConfig) -> list[str]:
    """sft, heldout, pref, mcqa; mcqa first when an SFT source is made of its rows."""
    if any(s.source == mcqa_sft.SOURCE for s in cfg.sft):
        return ["mcqa", "sft", "heldout", "pref"]
    return ["sft", "heldout", "pref", "mcqa"]


def output_order(name: str) -> tuple:
    kind = name.split("_")[0]
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), name)


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
