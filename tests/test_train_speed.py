"""Speed decisions of training: bf16 autocast only on CPUs with bf16 hardware, fp32 attention under
bf16 autocast (same masks, same log-probs and gradients as transformers' sdpa)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zephyr.train.config import LoraSection, PrefConfig

FIXTURES = Path(__file__).parent / "fixtures" / "train"

BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c"
EPYC_AVX2 = BASE + " avx2 bmi1 bmi2 sha_ni clzero xsaveerptr rdpru wbnoinvd arat npt"
XEON_AMX = BASE + " avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = BASE + " avx2 avx512f avx512bw avx512_vnni avx512_bf16"
AVX512_NO_BF16 = BASE + " avx2 avx512f avx512bw avx512_vnni"


def cpuinfo(flags: str, model: str = "AMD EPYC 7B13") -> str:
    return "".join(
        f"processor\t: {i}\nmodel name\t: {model}\nflags\t\t: {flags}\n\n" for i in range(2)
    )


@pytest.mark.parametrize(
    "flags,expected",
    [(EPYC_AVX2, False), (AVX512_NO_BF16, False), (XEON_AMX, True), (ZEN4, True), ("", False)],
)
def test_bf16_autocast_only_with_bf16_hardware(flags, expected):
    from zephyr.train.logprobs import bf16_supported

    assert bf16_supported(cpuinfo(flags)) is expected


def test_bf16_decision_reads_flags_not_other_fields():
    from zephyr.train.logprobs import bf16_supported

    assert not bf16_supported(cpuinfo(EPYC_AVX2, model="not amx_bf16 avx512_bf16 hardware"))


def test_use_bf16_follows_the_cpu(monkeypatch):
    """The trainers' switch (recipe bf16: true) is off on an AVX2-only CPU: they train in fp32."""
    from zephyr.train import common
    from zephyr.train.config import SFTConfig
    from zephyr.train.logprobs import bf16_supported

    for flags, expected in ((EPYC_AVX2, False), (XEON_AMX, True)):
        monkeypatch.setattr(common, "bf16_supported", lambda f=flags: bf16_supported(cpuinfo(f)))
        assert common.use_bf16(SFTConfig(bf16=True)) is expected
        assert common.use_bf16(SFTConfig(bf16=False)) is False


def _logps_and_grads(tiny_model, fp32_attention: bool, bf16: bool):
    from zephyr.io import read_jsonl
    from zephyr.models import load_model
    from zephyr.train.attention import NAME, use_fp32_attention
    from zephyr.train.batching import collate_shared
    from zephyr.train.logprobs import TokenLogps, add_lora, autocast, seq_logps
    from zephyr.train.pref import encode_pairs

    model, tok = load_model(tiny_model, dtype="bfloat16" if bf16 else "float32")
    if fp32_attention:
        use_fp32_attention(model)
        assert model.config._attn_implementation == NAME
    torch.manual_seed(0)
    lm = add_lora(model, LoraSection(dropout=0.0))
    with torch.no_grad():  # non-zero B: every LoRA parameter gets a gradient
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    cfg = PrefConfig(max_seq_len=160, bf16=bf16)
    pairs, _ = encode_pairs(tok, read_jsonl(FIXTURES / "pref_train.jsonl")[:4], cfg)
    batch = collate_shared(pairs, tok.pad_token_id)  # 4D prefix-sharing mask, restarted positions
    with autocast(bf16):
        logps = seq_logps(TokenLogps(lm), batch)
    logps.sum().backward()
    grads = [p.grad.clone() for p in lm.parameters() if p.requires_grad]
    return logps.detach(), grads


def test_fp32_attention_equals_sdpa_in_fp32(tiny_model):
    """Same kernel, same 4D mask: identical log-probs and LoRA gradients in fp32 training."""
    ref, g_ref = _logps_and_grads(tiny_model, False, False)
    out, g_out = _logps_and_grads(tiny_model, True, False)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    for a, b in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_fp32_attention_under_bf16_autocast_is_at_least_as_close_to_fp32(tiny_model):
    """Under bf16 autocast, attention in fp32 keeps the masks (prefix sharing) and stays within
    bf16 rounding of the fp32 log-probs, no farther than bf16 attention."""
    exact, _ = _logps_and_grads(tiny_model, False, False)
    bf16_att, _ = _logps_and_grads(tiny_model, False, True)
    fp32_att, grads = _logps_and_grads(tiny_model, True, True)
    err32 = float((fp32_att - exact).abs().max())
    err16 = float((bf16_att - exact).abs().max())
    assert err32 <= err16 * 1.5 + 1e-3
    assert err32 < 0.05 * float(exact.abs().max())
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
