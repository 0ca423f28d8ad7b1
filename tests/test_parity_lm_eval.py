"""Parity with lm-evaluation-harness 0.4.13: its HF backend and Zephyr on the same items.

lm-eval reads 20 items each of hellaswag, arc_challenge and mmlu (5-shot, one subject) from
../shared/data through task YAMLs that include its own templates (zephyr.eval.reference); both
score them with the tiny model. Prompts must be identical, predictions identical and every
per-choice log-likelihood within 1e-3.
"""

from __future__ import annotations

import bz2
import json

import pytest

from zephyr.eval import multiple_choice as mc
from zephyr.eval import reference as ref
from zephyr.eval.engine import Scorer
from zephyr.eval.task import EvalConfig
from zephyr.eval.tasks import arc, hellaswag, mmlu

N = 20
SUBJECT = "high_school_physics"


def test_zephyr_matches_lm_eval(tiny_model, shared_data, tmp_path):
    pytest.importorskip("lm_eval")
    from zephyr.models import load_model

    model, tok = load_model(tiny_model)
    cfg = EvalConfig(task="arc_challenge", data_dir=shared_data)
    hs_items = hellaswag.load(cfg)[:N]
    lines = (
        bz2.open(shared_data / "hellaswag" / "hellaswag_val_full.txt.bz2", "rt").read().split("\n")
    )
    hs_raw = [(lines[6 * i], lines[6 * i + 2 : 6 * i + 6], int(lines[6 * i + 1])) for i in range(N)]
    arc_path = shared_data / "arc" / "ARC-Challenge" / "ARC-Challenge-Test.jsonl"
    arc_rows = [json.loads(x) for x in arc_path.read_text().splitlines()[:N]]
    arc_items = arc.load(cfg, "arc_challenge")[:N]
    test, dev = mmlu.read_split(cfg, "test"), mmlu.read_split(cfg, "dev")
    mm_items = [it for it in mmlu.load(cfg, 5) if it.meta["subject"] == SUBJECT][:N]

    names = ref.write_tasks(
        tmp_path, hellaswag=hs_raw, arc=arc_rows, mmlu={SUBJECT: (test[SUBJECT][:N], dev[SUBJECT])}
    )
    theirs = ref.run_lm_eval(model, tok, tmp_path, names, batch_size=8)["samples"]
    scorer = Scorer(model, tok, batch_size=8, progress=False)
    for name, items in [
        ("zhellaswag", hs_items),
        ("zarc", arc_items),
        (f"zmmlu_{SUBJECT}", mm_items),
    ]:
        ours = mc.score(scorer, items)
        assert len(theirs[name]) == len(items) == N
        for it, ll, sample in zip(items, ours, theirs[name], strict=True):
            ref_ll = ref.loglikelihoods(sample)
            assert ref.contexts(sample) == [it.context] * len(it.choices), name  # same prompt
            assert [a[1] for a in sample["arguments"]] == [f" {c}" for c in it.choices]
            assert ll == pytest.approx(ref_ll, abs=1e-3), (name, it.id)
            assert mc.argmax(ll) == mc.argmax(ref_ll)
            norm = [v / len(c) for v, c in zip(ll, it.choices, strict=True)]
            ref_norm = [v / len(c) for v, c in zip(ref_ll, it.choices, strict=True)]
            assert mc.argmax(norm) == mc.argmax(ref_norm)
