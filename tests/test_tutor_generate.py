"""Streamed generation: pieces add up, stop strings are cut, cancel and max_tokens end it."""

from __future__ import annotations

import threading

from zephyr.tutor.generate import TUTOR_SYSTEM, GenParams, encode_chat, generate, with_system

MSGS = [{"role": "user", "content": "What is the speed of a car going 100 km in 2 h?"}]


def test_system_prompt_and_chat_template(tiny):
    _, tok = tiny
    msgs = with_system(MSGS, TUTOR_SYSTEM)
    assert msgs[0]["role"] == "system" and "units" in msgs[0]["content"]
    assert (
        with_system([{"role": "system", "content": "x"}, *MSGS], TUTOR_SYSTEM)[0]["content"] == "x"
    )
    text = tok.decode(encode_chat(tok, msgs))
    assert "patient STEM tutor" in text and text.endswith("<|im_start|>assistant\n")


def test_streamed_pieces_add_up_and_count_tokens(tiny):
    model, tok = tiny
    pieces: list[str] = []
    r = generate(model, tok, MSGS, GenParams(max_tokens=24, temperature=1.0, seed=3), pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == r.text
    assert len(pieces) >= 12  # about one piece per token, not one per word
    assert r.completion_tokens == 24 and r.finish_reason == "length"
    assert r.prompt_tokens == len(encode_chat(tok, MSGS))
    assert r.first_token_s is not None and r.first_token_s <= r.total_s


def test_streamed_text_equals_plain_generate_decoded(tiny):
    """Nothing lost or doubled between pieces: the stream == model.generate, decoded."""
    import torch

    model, tok = tiny
    pieces: list[str] = []
    r = generate(
        model, tok, MSGS, GenParams(max_tokens=40, temperature=1.0, seed=11), pieces.append
    )
    ids = torch.tensor([encode_chat(tok, MSGS)])
    torch.manual_seed(11)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=True,
        temperature=1.0, top_p=1.0, top_k=0, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    assert len(set(r.text.split())) > 5  # real varied text, not one repeated token
    assert "".join(pieces) == r.text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_seeded_sampling_is_reproducible(tiny):
    model, tok = tiny
    p = GenParams(max_tokens=12, temperature=1.0, seed=7)
    assert generate(model, tok, MSGS, p).text == generate(model, tok, MSGS, p).text


def test_stop_string_is_cut_and_never_streamed(tiny):
    model, tok = tiny
    full = generate(model, tok, MSGS, GenParams(max_tokens=30, temperature=1.0, seed=5)).text
    words = full.split()
    assert len(words) > 4
    stop = words[3]
    pieces: list[str] = []
    r = generate(
        model,
        tok,
        MSGS,
        GenParams(max_tokens=30, temperature=1.0, seed=5, stop=[stop]),
        pieces.append,
    )
    assert r.finish_reason == "stop"
    assert r.text == full[: full.find(stop)]
    assert stop not in "".join(pieces) and "".join(pieces) == r.text
    assert r.completion_tokens < 30


def test_cancel_flag_stops_generation(tiny):
    model, tok = tiny
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            cancel.set()

    r = generate(
        model, tok, MSGS, GenParams(max_tokens=200, temperature=1.0, seed=1), on_text, cancel=cancel
    )
    assert r.finish_reason == "cancelled"
    assert r.completion_tokens < 40  # stopped within a few tokens of the flag, not at 200
