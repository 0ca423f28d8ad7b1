"""The scoring engine against a naive full-forward reference (lm-eval's semantics), on a tiny model."""

from __future__ import annotations

import random

import pytest
import torch

from zephyr.eval.engine import MIN_SHARED_PREFIX, Scorer, _Group, _pack, rolling_windows

SHOTS = "The following are multiple choice questions (with answers) about physics.\n\n" + (
    "What is the unit of force?\nA. joule\nB. newton\nC. watt\nD. pascal\nAnswer: B\n\n" * 4
)
REQUESTS = (
    [
        (SHOTS + f"Question {i}: which is heavier?\nA. x\nB. y\nC. z\nD. w\nAnswer:", f" {c}")
        for i in range(3)
        for c in "ABCD"
    ]
    + [
        ("Roof shingle removal: A man is sitting on a roof. He", e)
        for e in [" is using wrap to wrap skis.", " starts pulling up roofing on a roof."]
    ]
    + [
        ("Question: Why is the sky blue?\nAnswer: ", "Rayleigh scattering of sunlight"),
        ("", "Hello world, again"),
    ]
)


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    from zephyr.models import load_model

    return load_model(tiny_model)


def reference(model, scorer, context, continuation):
    """lm-eval's computation: one full forward over (ctx + cont)[:-1], sum the cont log-probs."""
    ctx, cont = scorer.encode_pair(context, continuation)
    inp = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        lp = torch.log_softmax(model(inp).logits.float(), -1)[0, -len(cont) :]
    target = torch.tensor(cont)
    return float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


def test_loglikelihood_matches_full_forward(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, batch_size=3, progress=False)
    got = scorer.loglikelihood(REQUESTS)
    for req, (ll, greedy) in zip(REQUESTS, got, strict=True):
        ref_ll, ref_greedy = reference(model, scorer, *req)
        assert ll == pytest.approx(ref_ll, abs=1e-4), req
        assert greedy == ref_greedy


def test_batch_size_does_not_change_results(model_tok):
    model, tok = model_tok
    one = Scorer(model, tok, batch_size=1, progress=False).loglikelihood(REQUESTS)
    eight = Scorer(model, tok, batch_size=8, progress=False).loglikelihood(REQUESTS)
    for (a, ga), (b, gb) in zip(one, eight, strict=True):
        assert abs(a - b) < 1e-4 and ga == gb
    # same predictions per multiple-choice item (4 letters each)
    for i in range(0, 12, 4):
        assert max(range(4), key=lambda k: one[i + k][0]) == max(
            range(4), key=lambda k: eight[i + k][0]
        )


def test_encode_pair_moves_trailing_space_and_handles_empty_context(model_tok):
    _, tok = model_tok
    scorer = Scorer.__new__(Scorer)
    scorer.tokenizer, scorer.bos_text, scorer.prefix_token_id = tok, tok.bos_token, tok.bos_token_id
    ctx, cont = scorer.encode_pair("Answer: ", "yes")
    assert ctx == tok.encode("Answer:") and cont == tok.encode("Answer: yes")[len(ctx) :]
    ctx, cont = scorer.encode_pair("", "Hello")
    assert ctx == [tok.bos_token_id] and cont == tok.encode("Hello", add_special_tokens=False)


def test_shared_prefix_is_found_and_kept_apart_from_unrelated_contexts():
    scorer = Scorer.__new__(Scorer)
    shared = list(range(100, 100 + 2 * MIN_SHARED_PREFIX))
    groups = [_Group(tuple(shared + [i, i + 1]), [(i, [5])]) for i in range(3)]
    groups += [_Group((7, 8, 9), [(9, [5])]), _Group((1, 2), [(10, [5])])]
    clusters = scorer._clusters(groups)
    prefixed = [(p, g) for p, g in clusters if p]
    assert len(prefixed) == 1 and prefixed[0][0] == tuple(shared) and len(prefixed[0][1]) == 3
    loose = [g for p, gs in clusters if not p for g in gs]
    assert {g.ctx for g in loose} == {(7, 8, 9), (1, 2)}


def test_rolling_windows_match_lm_eval():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    rng = random.Random(0)
    for n in (0, 1, 7, 10, 11, 33):
        for window in (1, 4, 10):
            tokens = [rng.randrange(50) for _ in range(n)]
            expected = [
                make_disjoint_window(w) for w in get_rolling_token_windows(tokens, -1, window, 1)
            ]
            assert rolling_windows(tokens, -1, window) == expected


def test_loglikelihood_rolling_sums_the_windows(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, batch_size=4, progress=False, max_length=16)
    text = "The quick brown fox jumps over the lazy dog. " * 6
    total = 0.0
    windows = scorer.rolling_windows(text)
    assert len(windows) > 2
    for ctx, cont in windows:
        inp = torch.tensor([(ctx + cont)[:-1]])
        with torch.no_grad():
            lp = torch.log_softmax(model(inp).logits.float(), -1)[0, -len(cont) :]
        total += float(lp.gather(1, torch.tensor(cont)[:, None]).sum())
    assert scorer.loglikelihood_rolling([text, "short"])[0] == pytest.approx(total, abs=1e-3)


def test_token_perplexity_matches_sliding_window_recipe(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, batch_size=2, progress=False)
    text = "Energy is conserved in a closed system, and momentum is too. " * 8
    ids = tok.encode(text, add_special_tokens=False)
    window, stride = 24, 10
    nll, count, prev = 0.0, 0, 0
    for begin in range(0, len(ids), stride):  # the transformers perplexity recipe
        end = min(begin + window, len(ids))
        trg = end - prev
        x = torch.tensor([ids[begin:end]])
        labels = x.clone()
        labels[:, :-trg] = -100
        with torch.no_grad():
            logits = model(x).logits.float()[:, :-1]
        lab = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), reduction="sum"
        )
        nll += float(loss)
        count += int((lab != -100).sum())
        prev = end
        if end == len(ids):
            break
    got = scorer.token_perplexity(text, window=window, stride=stride)
    assert got["tokens"] == count
    assert got["token_perplexity"] == pytest.approx(
        float(torch.exp(torch.tensor(nll / count))), rel=1e-4
    )


def test_generate_is_greedy_batched_and_cut_at_stop(model_tok):
    model, tok = model_tok
    scorer = Scorer(model, tok, batch_size=4, progress=False)
    prompts = [
        "Question: what is 2+2?\nAnswer:",
        "Hi",
        "A much longer prompt about physics and energy",
    ]
    batched = scorer.generate(prompts, max_new_tokens=8, stop=[])
    single = [
        Scorer(model, tok, batch_size=1, progress=False).generate([p], 8, [])[0] for p in prompts
    ]
    assert batched == single
    for p, text in zip(prompts, batched, strict=True):
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            full = model.generate(
                ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id
            )
        assert text == tok.decode(full[0, ids.shape[1] :], skip_special_tokens=True)
    stop = batched[0][2:4]
    assert stop and scorer.generate(prompts[:1], 8, [stop])[0] == batched[0].split(stop)[0]


@pytest.mark.parametrize("arch", ["mistral", "qwen2-mixed"])
def test_sliding_window_models_score_like_a_full_forward(model_tok, arch):
    """A packed row carries a custom mask, which models use as given: the window must be in it."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    _, tok = model_tok
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        sliding_window=8,  # far shorter than the requests: the window decides the numbers
    )
    torch.manual_seed(0)
    if arch == "mistral":
        model = MistralForCausalLM(MistralConfig(num_hidden_layers=2, **common))
    else:
        config = Qwen2Config(
            num_hidden_layers=3, use_sliding_window=True, max_window_layers=1, **common
        )
        assert set(config.layer_types) == {"full_attention", "sliding_attention"}
        model = Qwen2ForCausalLM(config)
    model.eval()
    scorer = Scorer(model, tok, batch_size=4, progress=False)
    requests = REQUESTS[:6] + REQUESTS[12:14]  # a shared few-shot prefix, and multi-token endings
    for req, (ll, _) in zip(requests, scorer.loglikelihood(requests), strict=True):
        assert ll == pytest.approx(reference(model, scorer, *req)[0], abs=1e-4), req


def test_pack_lays_continuations_after_the_context_within_a_token_budget():
    g = _Group((1, 2, 3), [(0, [4, 5]), (1, [6]), (2, [7, 8, 9, 10]), (3, [11, 12, 13])])
    rows = _pack(g, 0, budget=6)
    assert [r.tokens for r in rows] == [[1, 2, 3, 4], [1, 2, 3, 7, 8, 9], [1, 2, 3, 11, 12]]
    assert [[i for i, _ in r.members] for r in rows] == [[0, 1], [2], [3]]
    tokens, positions, segment = rows[0].layout
    assert positions == [0, 1, 2, 3] and segment == [-1, -1, -1, 0]
    # the first token of each continuation is predicted by the context's last column
    assert rows[0].spots == [(2, 4), (3, 5), (2, 6)]
    assert rows[1].spots == [(2, 7), (3, 8), (4, 9), (5, 10)] and rows[1].layout[1][3:] == [3, 4, 5]
