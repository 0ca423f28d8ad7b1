"""Letter-bias removal: cyclic permutation scoring, the PriDe prior, letter tables."""

from __future__ import annotations

import math

import pytest

from zephyr.io import write_jsonl
from zephyr.tutor import debias

PRIOR = [0.55, 0.25, 0.12, 0.08]  # a model that loves "A"


def biased_scorer(content: dict[str, float]):
    """Letter probabilities ∝ prior(letter) × content(choice text): a letter-biased reader."""

    def score(items):
        out = []
        for it in items:
            raw = [PRIOR[d] * content[c] for d, c in enumerate(it["choices"])]
            out.append([r / sum(raw) for r in raw])
        return out

    return score


def test_shifts_put_every_choice_at_every_letter():
    perms = debias.shifts(4)
    assert len(perms) == 4 and perms[0] == [0, 1, 2, 3]
    for letter in range(4):
        assert sorted(p[letter] for p in perms) == [0, 1, 2, 3]


def test_cyclic_removes_a_letter_prior():
    content = {"w": 1.0, "x": 1.6, "y": 1.0, "z": 1.0}  # "x" is right, weakly
    score = biased_scorer(content)
    item = {"question": "q", "choices": ["w", "x", "y", "z"]}  # gold at B
    raw = score([item])[0]
    assert debias.argmax(raw) == 0  # the prior wins: "A"
    probs, shifted = debias.cyclic(score, [item])
    assert debias.argmax(probs[0]) == 1 and math.isclose(sum(probs[0]), 1.0)
    assert len(shifted[0]) == 4


def test_pride_prior_estimate_and_correction():
    contents = [{"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.0}, {"a": 3.0, "b": 1.0, "c": 1.0, "d": 2.0}]
    shifted = []
    for content in contents:
        score = biased_scorer(content)
        shifted += debias.cyclic(score, [{"question": "q", "choices": list(content)}])[1]
    prior = debias.prior_from(shifted, 4)
    assert prior == pytest.approx(PRIOR, rel=0.15)  # the normalisers differ per shift: close
    content = {"p": 1.0, "q": 1.0, "r": 1.0, "s": 1.5}  # gold at D, the least liked letter
    observed = biased_scorer(content)([{"question": "q", "choices": list(content)}])[0]
    assert debias.argmax(observed) == 0
    assert debias.argmax(debias.apply_prior(observed, prior)) == 3


def test_letter_table_and_wilson():
    table = debias.letter_table([0, 0, 0, 1], [0, 1, 2, 3])
    assert table["A"]["pred"] == 0.75 and table["A"]["gold"] == 0.25
    lo, hi = table["A"]["pred_ci"]
    assert lo < 0.75 < hi and 0 <= lo and hi <= 1
    assert debias.wilson(0, 10)[0] == 0.0 and debias.wilson(10, 10)[1] == pytest.approx(1.0)


def _bump_letter(model, tok, letter_index: int, n: int):
    from zephyr.tutor.mcqa import letter_ids

    tid = letter_ids(tok, n)[letter_index]

    def bump(module, args, output):
        output.logits[..., tid] += 50.0
        return output

    return model.register_forward_hook(bump)


def test_tutor_mcqa_is_unsure_when_only_a_letter_speaks(tiny):
    """A model that always says C: raw answer C at ~100%; debiased, every choice ~1/3: unsure."""
    from zephyr.tutor.mcqa import answer_mcq, say

    model, tok = tiny
    handle = _bump_letter(model, tok, 2, 3)
    try:
        raw = answer_mcq(model, tok, "Pick one", ["x", "y", "z"])
        fair = answer_mcq(model, tok, "Pick one", ["x", "y", "z"], None, "cyclic", 0.5)
    finally:
        handle.remove()
    assert raw["letter"] == "C" and raw["confidence"] > 0.99 and not raw["unsure"]
    assert fair["raw_probs"]["C"] > 0.99
    assert all(p == pytest.approx(1 / 3, abs=0.02) for p in fair["probs"].values())
    assert fair["unsure"] and say(fair, ["x", "y", "z"]).startswith("I'm not sure")


def test_mcqa_letter_task_reports_before_and_after(tiny, tmp_path):
    from zephyr.eval.engine import Scorer
    from zephyr.eval.task import EvalConfig
    from zephyr.eval.tasks import mcqa_letter

    model, tok = tiny
    rows = [
        {"id": f"m{i}", "question": f"Q{i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4}
        for i in range(8)
    ]
    rows.insert(0, {"id": "m5", "question": "Q?", "choices": list("abcde"), "answer": 4})
    write_jsonl(tmp_path / "mcqa_val.jsonl", rows)
    scorer = Scorer(model, tok, batch_size=8, progress=False)
    handle = _bump_letter(model, tok, 0, 4)
    try:
        res = mcqa_letter.run(scorer, EvalConfig(task="mcqa_letter", data_dir=tmp_path))
    finally:
        handle.remove()
    assert res.extra["letters"]["A"]["pred"] == 1.0  # before: always A
    assert res.metrics["acc"] == 2 / 9
    assert all(p < 1e-6 or p > 1 - 1e-6 for p in res.per_item["p_gold"])
    # after: the letter alone says nothing, so every choice gets 1/4 (the bias is gone)
    assert res.per_item["p_gold_cyclic"] == pytest.approx([0.2] + [0.25] * 8, abs=1e-3)
    # the prior is estimated on the usual choice count (4), not lost to the one 5-choice item
    assert res.extra["pride_choices"] == 4 and res.extra["pride_prior"]["A"] > 0.99
    assert len(res.per_item["acc_cyclic"]) == 9 and "acc_pride" in res.metrics
    off = mcqa_letter.run(
        scorer, EvalConfig(task="mcqa_letter", data_dir=tmp_path, options={"debias": "none"})
    )
    assert "acc_cyclic" not in off.metrics
