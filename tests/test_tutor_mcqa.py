"""MCQA mode: the prompt, the no-space letter ids, batching, and that the answer follows the logits."""

from __future__ import annotations

import pytest

from zephyr.data.schema import render_mc
from zephyr.errors import ZephyrError
from zephyr.tutor.mcqa import answer_mcq, answer_mcq_batch, letter_ids, mcq_messages


def test_letter_ids_have_no_leading_space(tiny):
    _, tok = tiny
    ids = letter_ids(tok, 4)
    assert [tok.decode([i]) for i in ids] == ["A", "B", "C", "D"]
    assert ids != [tok.encode(" " + c, add_special_tokens=False)[0] for c in "ABCD"]


def test_prompt_uses_chat_template_and_render_mc(tiny):
    _, tok = tiny
    msgs = mcq_messages("What is 2+2?", ["3", "4"], system="be brief")
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1]["content"].startswith(render_mc("What is 2+2?", ["3", "4"]))
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


def test_answer_follows_the_letter_logits(tiny):
    """Push the 'C' logit up: the answer must become C with probability ~1 over the letters."""
    model, tok = tiny
    c_id = letter_ids(tok, 3)[2]

    def bump(module, args, output):
        output.logits[..., c_id] += 50.0
        return output

    handle = model.register_forward_hook(bump)
    try:
        ans = answer_mcq(model, tok, "Pick one", ["x", "y", "z"])
    finally:
        handle.remove()
    assert ans["letter"] == "C" and ans["index"] == 2
    assert ans["probs"]["C"] > 0.999
    assert set(ans["probs"]) == {"A", "B", "C"}


def test_batch_matches_single_despite_padding(tiny):
    model, tok = tiny
    items = [
        {"question": "Short?", "choices": ["a", "b"]},
        {"question": "A much longer question " * 8, "choices": ["one", "two", "three", "four"]},
        {"question": "Medium length question here?", "choices": ["p", "q", "r"]},
    ]
    batched = answer_mcq_batch(model, tok, items, batch_size=3)
    for item, got in zip(items, batched, strict=True):
        single = answer_mcq(model, tok, item["question"], item["choices"])
        assert got["letter"] == single["letter"]
        assert sum(got["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        for k, p in single["probs"].items():
            assert got["probs"][k] == pytest.approx(p, abs=1e-4)


def test_bad_items_raise_clear_errors(tiny):
    model, tok = tiny
    with pytest.raises(ZephyrError, match="2 to 26 choices"):
        answer_mcq(model, tok, "Q?", ["only one"])
    with pytest.raises(ZephyrError, match="question is empty"):
        answer_mcq(model, tok, "  ", ["a", "b"])
