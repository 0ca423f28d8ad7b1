"""Decontamination throughput: a 100k-row training mixture against all four eval sets.

Builds the mixture from the real training sources in ../shared/data (cycled up to --rows, with
--planted rows that embed a GSM8K test question), then times the hashed n-gram index (build + find)
against a plain-Python reference (a set of word-tuple n-grams, the textbook method) run on a
--sample-row subsample and extrapolated. Times are this process's CPU seconds (time.process_time),
so a machine shared with other jobs inflates neither side; both run in the same process and the
ratio is what to compare across machines. Last line: key=value pairs.

    .venv/bin/python bench/bench_data.py [--data-root ../shared/data] [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path

from zephyr.data.build import EVAL_SPECS
from zephyr.data.config import Source
from zephyr.data.decontam import Index
from zephyr.data.readers import reader
from zephyr.data.stats import Stats
from zephyr.data.text import row_fields, words

TRAIN = [
    ("sft", Source("gsm8k", split="train")),
    ("sft", Source("lima")),
    ("sft", Source("code_alpaca")),
    ("sft", Source("code_alpaca", subset="new")),
    ("pref", Source("hh_rlhf")),
    ("pref", Source("pandalm")),
    ("pref", Source("dpo_demo")),
    ("mcqa", Source("arc", split="train")),
    ("mcqa", Source("mmlu", split="val")),
    ("mcqa", Source("sciq", split="valid")),
]
TARGET_S = 60.0


def load(kind: str, spec: Source, root: Path) -> list[dict]:
    mod = reader(spec, kind, spec.label)
    return list(mod.rows(spec, mod.files(spec, root), Stats(spec.label, kind), kind))


def eval_docs(root: Path) -> dict[str, list[list[str]]]:
    return {
        name: [row_fields(r) for r in load("sft" if name == "gsm8k_test" else "mcqa", spec, root)]
        for name, spec in EVAL_SPECS.items()
    }


def naive_index(evals: dict[str, list[list[str]]], n: int, max_doc_freq: int) -> dict[tuple, str]:
    """The reference: a dict of word-tuple n-grams -> eval set, same template rule."""
    index: dict[tuple, str] = {}
    for name, docs in evals.items():
        freq: Counter = Counter()
        for doc in docs:
            grams = set()
            for field in doc:
                w = words(field)
                grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
            freq.update(grams)
        for g, c in freq.items():
            if c <= max_doc_freq:
                index.setdefault(g, name)
    return index


def naive_find(index: dict[tuple, str], docs: list[list[str]], n: int) -> list[str | None]:
    out = []
    for doc in docs:
        hit = None
        for field in doc:
            w = words(field)
            hit = next(
                (index[g] for i in range(len(w) - n + 1) if (g := tuple(w[i : i + n])) in index),
                None,
            )
            if hit:
                break
        out.append(hit)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--planted", type=int, default=100)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.data_root)
    rng = random.Random(args.seed)

    pool = [row_fields(r) for kind, spec in TRAIN for r in load(kind, spec, root)]
    mixture = [pool[i % len(pool)] for i in range(args.rows)]
    rng.shuffle(mixture)
    gsm_test = [json.loads(x)["question"] for x in (root / "gsm8k" / "test.jsonl").open()]
    planted = rng.sample(range(args.rows), args.planted)
    for i, q in zip(planted, rng.sample(gsm_test, args.planted), strict=True):
        mixture[i] = ["Here is a practice problem for you.", f"Solve this: {q} Show your work."]
    print(
        f"mixture: {len(mixture)} rows from {len(pool)} distinct training rows, {args.planted} planted"
    )

    t0 = time.process_time()
    evals = eval_docs(root)
    t_read = time.process_time() - t0

    t0 = time.process_time()
    idx = Index(args.ngram)
    for name, docs in evals.items():
        idx.add(name, docs)
    idx.build()
    t_index = time.process_time() - t0
    t0 = time.process_time()
    hits = idx.find(mixture)
    t_find = time.process_time() - t0

    index_mb = (
        idx.hashes.nbytes + idx.labels.nbytes + idx.bitmap.nbytes + idx.codes.nbytes
    ) / 2**20

    sample = rng.sample(range(args.rows), args.sample)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    ref = naive_index(evals, args.ngram, idx.max_doc_freq)
    t_ref_index = time.process_time() - t0
    ref_mb = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    ) / 1024  # peak growth, KiB -> MiB
    t0 = time.process_time()
    ref_hits = naive_find(ref, [mixture[i] for i in sample], args.ngram)
    t_ref_find = (time.process_time() - t0) * args.rows / args.sample

    agree = sum((hits[i] is None) == (h is None) for i, h in zip(sample, ref_hits, strict=True))
    found = sum(hits[i] is not None for i in planted)
    ours = t_index + t_find
    ref_total = t_ref_index + t_ref_find
    per_set = Counter(h for h in hits if h)
    print(
        f"eval sets read in {t_read:.1f}s: " + ", ".join(f"{k}={len(v)}" for k, v in evals.items())
    )
    print(
        f"hashed index: build {t_index:.1f}s + find {t_find:.1f}s = {ours:.1f}s ({args.rows / ours:,.0f} rows/s)"
    )
    print(
        f"plain-Python reference: build {t_ref_index:.1f}s + find {t_ref_find:.1f}s "
        f"(extrapolated from {args.sample} rows) = {ref_total:.1f}s"
    )
    print(
        f"index memory: hashed arrays {index_mb:.0f} MiB; reference dict of word tuples grew the "
        f"peak RSS by {ref_mb:.0f} MiB"
    )
    print(
        f"rows flagged per eval set: {dict(per_set)}; planted found {found}/{args.planted}; "
        f"agreement with the reference on the sample {agree}/{args.sample}"
    )
    print(
        f"decontam_rows={args.rows} decontam_s={ours:.2f} index_s={t_index:.2f} find_s={t_find:.2f} "
        f"rows_per_s={args.rows / ours:.0f} target_s={TARGET_S:.0f} target_ratio={TARGET_S / ours:.2f} "
        f"reference_s={ref_total:.2f} speedup_vs_reference={ref_total / ours:.2f} "
        f"index_mib={index_mb:.0f} reference_index_mib={ref_mb:.0f} "
        f"planted_found={found}/{args.planted} agree={agree}/{args.sample}"
    )


if __name__ == "__main__":
    main()
