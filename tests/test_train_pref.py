"""DPO / IPO / KTO on the tiny model: loss semantics vs TRL, prefix sharing, reference cache,
truncated pairs, KTO's micro-batch rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from zephyr.errors import ZephyrError
from zephyr.train.config import LoraSection, PrefConfig
from zephyr.train.losses import dpo_loss, ipo_loss, kto_kl, kto_loss

FIXTURES = Path(__file__).parent / "fixtures" / "train"


def quick(**kw) -> PrefConfig:
    base = dict(
        lr=1e-2,
        micro_batch=4,
        grad_accum=1,
        max_steps=4,
        warmup_steps=0,
        bf16=False,
        beta=0.5,
        max_seq_len=160,
        max_val=8,
        merge=False,
        eval_every=0,
    )
    return PrefConfig(**{**base, **kw})


def test_dpo_and_ipo_losses_match_trl_formulas():
    """TRL DPOTrainer._compute_loss (trl 1.16, loss_type sigmoid / ipo) on the same log-probs."""
    g = torch.Generator().manual_seed(0)
    c, r, rc, rr = (torch.randn(16, generator=g) * 20 - 50 for _ in range(4))
    n_c, n_r = torch.randint(1, 40, (16,), generator=g), torch.randint(1, 40, (16,), generator=g)
    beta = 0.1
    # trl: delta_score = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    delta = (c - rc) - (r - rr)
    trl_sigmoid = -F.logsigmoid(beta * delta)
    torch.testing.assert_close(dpo_loss(c, r, rc, rr, beta), trl_sigmoid)
    assert abs(float(dpo_loss(c, c, c, c, beta).mean()) - 0.693147) < 1e-6  # step 0: log 2
    # trl ipo: per-token averages, (delta - 1/(2 beta))^2
    trl_ipo = ((c - rc) / n_c - (r - rr) / n_r - 1 / (2 * beta)) ** 2
    torch.testing.assert_close(ipo_loss(c, r, rc, rr, beta, n_c.float(), n_r.float()), trl_ipo)


def test_kto_loss_matches_trl_formula():
    g = torch.Generator().manual_seed(1)
    logps, ref, kl_pol, kl_ref = (torch.randn(8, generator=g) for _ in range(4))
    desirable = torch.tensor([True, False] * 4)
    beta, wd, wu = 0.1, 1.0, 1.33
    kl = (kl_pol - kl_ref).mean().clamp(min=0)  # trl: (KL_logps - ref_KL_logps).mean().clamp(min=0)
    assert float(kto_kl(kl_pol, kl_ref)) == pytest.approx(float(kl))
    ratio = logps - ref
    trl = torch.where(
        desirable,
        wd * (1 - torch.sigmoid(beta * (ratio - kl))),
        wu * (1 - torch.sigmoid(beta * (kl - ratio))),
    )
    torch.testing.assert_close(kto_loss(logps, ref, desirable, kl, beta, wd, wu), trl)


def test_prefix_sharing_equals_separate_rows_and_never_leaks(tiny_model):
    """[prompt, chosen, rejected] in one row gives the same log-probs as two rows; changing the
    chosen tokens cannot change the rejected log-probs (the mask blocks chosen -> rejected)."""
    from zephyr.io import read_jsonl
    from zephyr.models import load_model
    from zephyr.train.batching import collate_pairs, collate_shared
    from zephyr.train.encode import PairExample
    from zephyr.train.logprobs import TokenLogps, seq_logps
    from zephyr.train.pref import encode_pairs

    model, tok = load_model(tiny_model)
    net = TokenLogps(model)
    pairs, _ = encode_pairs(tok, read_jsonl(FIXTURES / "pref_train.jsonl")[:4], quick())
    with torch.no_grad():
        shared = seq_logps(net, collate_shared(pairs, tok.pad_token_id))
        separate = seq_logps(net, collate_pairs(pairs, tok.pad_token_id))
        torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-4)
        other = [PairExample(p.prompt, [5] * (len(p.chosen) + 3), p.rejected) for p in pairs]
        changed = seq_logps(net, collate_shared(other, tok.pad_token_id))
    torch.testing.assert_close(changed[1::2], shared[1::2], rtol=1e-5, atol=1e-4)
    assert not torch.allclose(changed[0::2], shared[0::2])


def test_truncated_pairs_are_dropped_and_counted(tiny_model):
    from zephyr.io import read_jsonl
    from zephyr.models import load_tokenizer
    from zephyr.train.encode import encode_pair
    from zephyr.train.pref import encode_pairs

    tok = load_tokenizer(tiny_model)
    rows = read_jsonl(FIXTURES / "pref_train.jsonl")
    cfg = quick(max_prompt_len=512, max_seq_len=60)
    prompt_lens = [
        len(
            tok.apply_chat_template(
                [{"role": "user", "content": r["prompt"]}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )
        for r in rows
    ]
    expect = sum(n >= 60 for n in prompt_lens)
    assert 0 < expect < len(rows)
    kept, dropped = encode_pairs(tok, rows, cfg)
    assert dropped == expect and len(kept) == len(rows) - expect
    assert all(p.chosen and p.rejected and len(p.prompt) + len(p.chosen) <= 60 for p in kept)
    assert encode_pair(tok, rows[0], 512, 5) is None


def test_kto_rejects_micro_batch_of_one(tmp_path):
    from zephyr.train.pref import train_pref

    with pytest.raises(ZephyrError, match="micro_batch >= 2"):
        train_pref(quick(loss="kto", micro_batch=1), "unused", FIXTURES, tmp_path, 0)


def test_dpo_learns_and_reuses_cached_reference(tiny_model, tmp_path, monkeypatch):
    from zephyr.train.pref import train_pref

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    cfg = quick(max_steps=6, eval_every=3, max_seq_len=60, max_prompt_len=512)
    first = train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "a", 0)
    second = train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "b", 0)
    assert first["ref_cache"]["hit"] is False and second["ref_cache"]["hit"] is True
    assert list((tmp_path / "home" / "ref_logps").glob("*.pt"))
    assert first["rows"]["dropped"] > 0  # this max_seq_len truncates some completions away
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "reward_acc" in r]
    assert evals[0]["step"] == 0 and evals[0]["reward_acc"] == 0.0 and evals[0]["ties"] == 1.0
    assert evals[0]["val_loss"] == pytest.approx(0.693147, abs=1e-5)
    assert evals[-1]["reward_acc"] > 0.8 and evals[-1]["margin"] > 0
    assert all(abs(r["loss"] - 0.693147) > 1e-3 for r in rows if r["step"] >= 2 and "loss" in r)
    for f in ("plots/rewards.png", "adapter/adapter_config.json"):
        assert (tmp_path / "a" / f).exists()
    # same losses whether the reference came from the cache or not
    la = [
        json.loads(x).get("loss")
        for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    lb = [
        json.loads(x).get("loss")
        for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert la == pytest.approx(lb, abs=1e-6)


@pytest.mark.parametrize("loss", ["ipo", "kto"])
def test_ipo_and_kto_train(tiny_model, tmp_path, monkeypatch, loss):
    from zephyr.train.pref import train_pref

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    cfg = quick(loss=loss, max_steps=4, bf16=True)  # bf16 base + autocast where the CPU has it
    info = train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / loss, 0)
    first, last = info["first_eval"], info["final_eval"]
    assert last["val_loss"] < first["val_loss"] and last["reward_acc"] > 0.5


def _dpo_loss_and_grads(lm, batch, seed: int, plain_head: bool = False, bf16: bool = False):
    """Summed DPO-style objective on a shared-prefix batch; LoRA grads; plain head if asked."""
    from zephyr.train.logprobs import TokenLogps, autocast

    net = TokenLogps(lm)
    if plain_head:  # the unchunked reference: full logits, autograd through cross_entropy
        causal = lm.get_base_model()

        def net(ids, mask, pos, src, tgt):
            h = causal.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            logits = causal.lm_head(h.reshape(-1, h.shape[-1])[src])
            return -F.cross_entropy(logits.float(), tgt, reduction="none")

    params = [p for p in lm.parameters() if p.requires_grad]
    torch.manual_seed(seed)  # LoRA dropout: the same masks in both runs
    with autocast(bf16):
        tok = net(
            *(batch[k] for k in ("input_ids", "attention_mask", "position_ids", "src", "tgt"))
        )
        logps = torch.zeros(batch["n_seg"]).index_add(0, batch["seg"], tok)
        loss = dpo_loss(logps[0::2], logps[1::2], logps[0::2] * 0.9, logps[1::2] * 1.1, 0.5).sum()
    grads = torch.autograd.grad(loss, params)
    return float(loss), grads


@pytest.mark.parametrize("bf16", [False, True])
def test_checkpointing_and_chunked_head_keep_loss_and_grads(tiny_model, monkeypatch, bf16):
    """gradient_checkpointing (non-reentrant, 4D prefix-sharing mask, LoRA dropout on) and the
    chunked LM head give the loss and LoRA gradients of the plain path: to 1e-5 in fp32, to bf16
    rounding under autocast; and the checkpointed run really recomputes the layers."""
    from zephyr.io import read_jsonl
    from zephyr.models import load_model
    from zephyr.train import logprobs
    from zephyr.train.batching import collate_shared
    from zephyr.train.logprobs import add_lora
    from zephyr.train.pref import encode_pairs

    monkeypatch.setattr(logprobs, "HEAD_CHUNK", 7)  # several chunks, the last one partial
    runs = {}
    for gc in (False, True):
        model, tok = load_model(tiny_model, dtype="bfloat16" if bf16 else "float32")
        torch.manual_seed(0)
        lm = add_lora(model, LoraSection(dropout=0.1), checkpointing=gc)
        with torch.no_grad():  # non-zero B: every LoRA parameter gets a gradient
            for n, p in lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        lm.train()
        calls = []
        # a pre-hook: non-reentrant recompute stops early, right after the last saved tensor
        lm.get_base_model().model.layers[0].mlp.register_forward_pre_hook(
            lambda *a, c=calls: c.append(1)
        )
        pairs, _ = encode_pairs(tok, read_jsonl(FIXTURES / "pref_train.jsonl")[:4], quick())
        batch = collate_shared(pairs, tok.pad_token_id)
        assert batch["tgt"].numel() > 3 * 7
        runs[gc] = _dpo_loss_and_grads(lm, batch, 1, bf16=bf16), len(calls)
        if not gc:
            runs["plain"] = _dpo_loss_and_grads(lm, batch, 1, plain_head=True, bf16=bf16), 0
    assert runs[True][1] == 2 and runs[False][1] == 1  # forward + recompute vs forward only
    (loss_gc, g_gc), (loss_0, g_0), (loss_p, g_p) = runs[True][0], runs[False][0], runs["plain"][0]
    assert loss_gc == pytest.approx(loss_0, rel=1e-5 if not bf16 else 1e-3)
    assert loss_0 == pytest.approx(loss_p, rel=1e-5 if not bf16 else 1e-3)
    for a, b, c in zip(g_gc, g_0, g_p, strict=True):
        assert float(b.abs().max()) > 0
        if bf16:  # bf16 rounds the head's gradient matmul differently: compare whole tensors
            assert float((a - b).norm() / b.norm()) < 2e-2
            assert float((b - c).norm() / c.norm()) < 2e-2
        else:
            # fp32, the same math in another order (chunks, thread count): rounding-level only
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-6)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", ["sigmoid", "kto"])
def test_resume_reproduces_loss_curve_and_weights(tiny_model, tmp_path, monkeypatch, loss):
    """As SFT's resume test: a run halted after step 3 (last checkpoint: step 2) and resumed logs
    the losses and validation of an uninterrupted run and ends with the same adapter weights."""
    from safetensors.torch import load_file

    from zephyr.train.loop import Halt
    from zephyr.train.pref import train_pref

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    # dropout on: the RNG state must resume too
    cfg = quick(loss=loss, save_every=2, max_steps=5, eval_every=2, lora=LoraSection(dropout=0.1))
    train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "full", 0)
    with pytest.raises(Halt):
        train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "crash", 0, halt_after=3)
    assert [p.name for p in sorted((tmp_path / "crash" / "checkpoints").glob("step-*"))] == [
        "step-0000002"
    ]
    train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "crash", 0)  # picks up the checkpoint
    full, resumed = _rows(tmp_path / "full"), _rows(tmp_path / "crash")
    assert [r["step"] for r in full] == [r["step"] for r in resumed] == [0, 1, 2, 3, 4, 5]
    keys = {"loss", "val_loss", "reward_acc", "margin", "kl", "train_margin", "grad_norm", "lr"}
    for a, b in zip(full, resumed, strict=True):
        assert a.keys() == b.keys()
        for k in keys & a.keys():
            assert a[k] == pytest.approx(b[k], abs=1e-6), (a["step"], k, a[k], b[k])
    assert full[-1]["loss"] != full[1]["loss"]  # it trained
    wa, wb = (
        load_file(tmp_path / d / "adapter" / "adapter_model.safetensors") for d in ("full", "crash")
    )
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)
