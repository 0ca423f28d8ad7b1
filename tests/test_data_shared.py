"""Integration: build recipes/shared.yaml from the real public data (../shared/data) and check it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zephyr.config import load_yaml
from zephyr.data.build import build, parse_config
from zephyr.data.text import row_fields, words
from zephyr.io import read_jsonl

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "shared.yaml"
# rows per file, from each folder's SOURCE.md
READ = {
    ("sft", "gsm8k:train"): 7473,
    ("sft", "lima"): 1029,
    ("sft", "code_alpaca"): 2017,
    ("pref", "hh_rlhf/helpful-base"): 2302,
    ("pref", "hh_rlhf/harmless-base"): 2254,
    ("pref", "pandalm"): 999,
    ("pref", "dpo_demo"): 300,
    ("mcqa", "arc:train"): 1117 + 2251,
    ("mcqa", "arc:dev"): 298 + 570,
    ("mcqa", "mmlu:dev"): 285,
    ("mcqa", "mmlu:val"): 1530,
    ("mcqa", "sciq:valid"): 1000,
}
EVAL_DOCS = {"gsm8k_test": 1119, "arc_test": 971 + 2376, "mmlu_test": 13835, "hellaswag_val": 9842}


@pytest.fixture(scope="module")
def shared(shared_data, tmp_path_factory) -> tuple[Path, dict, dict]:
    section = load_yaml(RECIPE)["data"]
    out = tmp_path_factory.mktemp("shared")
    return out, build(parse_config(section), shared_data, out, seed=0), section


def test_every_source_is_read_in_full_and_accounted_for(shared):
    _, man, _ = shared
    for (kind, name), n in READ.items():
        s = man["sources"][kind][name]
        assert s["read"] == n, (kind, name)
        assert s["read"] == s["kept"] + sum(s["dropped"].values())
    assert {k: e["docs"] for k, e in man["decontam"]["eval_sets"].items()} == EVAL_DOCS


def test_caps_are_min_of_cap_and_what_is_left(shared):
    _, man, section = shared
    for kind in ("sft", "pref", "mcqa"):
        for spec in section[kind]:
            name = spec["source"] + (f"/{spec['subset']}" if "subset" in spec else "")
            name += f":{spec['split']}" if "split" in spec else ""
            s = man["sources"][kind][name]
            left = s["kept"] + s["dropped"].get("over_cap", 0)
            assert s["kept"] == min(spec.get("cap", left), left), name


def test_pandalm_ties_match_an_independent_count(shared, shared_data):
    _, man, _ = shared
    data = json.loads((shared_data / "pandalm-human-preferences" / "testset-v1.json").read_text())
    ties = 0
    for d in data:
        label, count = Counter(d[f"annotator{i}"] for i in (1, 2, 3)).most_common(1)[0]
        ties += count < 2 or label == 0
    assert man["sources"]["pref"]["pandalm"]["dropped"]["tie"] == ties


def naive_ngrams(texts, n=13) -> set[tuple[str, ...]]:
    grams = set()
    for t in texts:
        w = words(t)
        grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return grams


def test_no_output_row_shares_a_13gram_with_gsm8k_or_arc_test(shared, shared_data):
    """Cross-check the hashed decontamination with a plain set of word tuples."""
    out, man, _ = shared
    evals = [
        json.loads(x)["question"] + "\n" + json.loads(x)["answer"]
        for x in (shared_data / "gsm8k/test.jsonl").open()
    ]
    for sub in ("ARC-Challenge", "ARC-Easy"):
        for x in (shared_data / f"arc/{sub}/{sub}-Test.jsonl").open():
            q = json.loads(x)["question"]
            evals += [q["stem"]] + [c["text"] for c in q["choices"]]
    grams = naive_ngrams(evals)
    for kind in ("sft", "mcqa"):
        for r in read_jsonl(out / f"{kind}_train.jsonl"):
            assert not naive_ngrams(row_fields(r)) & grams, r["id"]
    assert man["decontam"]["eval_sets"]["gsm8k_test"]["removed"]["sft"] > 0
    assert man["decontam"]["eval_sets"]["arc_test"]["removed"]["mcqa"] > 0


def test_outputs_are_clean(shared):
    out, man, _ = shared
    for kind in ("sft", "pref", "mcqa"):
        rows = read_jsonl(out / f"{kind}_train.jsonl") + read_jsonl(out / f"{kind}_val.jsonl")
        assert len({r["id"] for r in rows}) == len(rows)
        val = man["outputs"][f"{kind}_val.jsonl"]["rows"]
        assert val == round(0.05 * len(rows))
    assert man["synth_test_overlap"] == 0
