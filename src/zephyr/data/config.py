"""The recipe's `data:` section as typed dataclasses (unknown keys fail with one sentence)."""

from __future__ import annotations

from dataclasses import dataclass, field

EVAL_SETS = ("gsm8k_test", "arc_test", "mmlu_test", "hellaswag_val")


@dataclass
class Source:
    """One entry of a mixture list: a reader, which part of it, and how many rows at most."""

    source: str  # mcqa (sft: this build's MCQA rows), gsm8k, arc, mmlu, sciq, hellaswag, hh_rlhf, pandalm, dpo_demo, lima, code_alpaca, alpaca, file, hub, synth
    split: str | None = None
    subset: str | None = None
    cap: int | None = None  # N_i = min(cap, S_i): never oversampled
    path: str | None = None  # a file (relative to the data root) instead of the source's default
    format: str | None = None  # file/hub: jsonl, json, csv, parquet (default: from the suffix)
    columns: dict = field(default_factory=dict)  # file/hub: canonical field -> column
    name: str | None = None  # label in the manifest and the rows' `source` (default: derived)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        label = self.source + (f"/{self.subset}" if self.subset else "")
        return label + (f":{self.split}" if self.split else "")


@dataclass
class Decontam:
    ngram: int = 13
    max_doc_freq: int = 10  # an eval n-gram in more documents than this is template text, ignored
    against: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    files: list[str] = field(default_factory=list)  # more eval files (jsonl/json/csv/txt)


@dataclass
class SynthConfig:
    """`data.synth:`: what the synthetic generator (zephyr.data.synth) makes for this build."""

    seed: int = 0
    n_per_family: int = 200
    test_n_per_family: int = 20
    families: list[str] | None = None


@dataclass
class DataConfig:
    seed: int | None = None  # default: the recipe's seed
    val_fraction: float = 0.05
    max_chars: int = 8000  # rows whose text is longer are dropped (too_long)
    strict: bool = False  # fail on the first malformed row instead of counting it (--strict)
    max_row_chars: int = 1_000_000  # a longer raw line / JSON element / CSV record: a bad row
    max_source_bytes: int = 1 << 30  # a source decompressing to more stops the build
    pii: bool = True
    unsafe: bool = True
    decontam: Decontam = field(default_factory=Decontam)
    synth: SynthConfig | None = None
    # GSM8K's <<expr=result>> annotations kept, synthetic solutions annotated (docs/tutor.md)
    calculator: bool = False
    sft: list[Source] = field(default_factory=list)
    pref: list[Source] = field(default_factory=list)
    mcqa: list[Source] = field(default_factory=list)
    # preference pairs held out of pref_train/val (no shared first user turn): pref_heldout.jsonl
    heldout: list[Source] = field(default_factory=list)
