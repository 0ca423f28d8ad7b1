"""Quantization on the tiny model: every method saves, reloads in a fresh process and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zephyr.errors import ZephyrError
from zephyr.eval.engine import Scorer
from zephyr.models import load_model
from zephyr.quantize import awq, easyquant, gptq, rtn
from zephyr.quantize.methods import QuantizeConfig, label_of, quantize, targets_of
from zephyr.quantize.qweight import pack_int4, rel_error, unpack_int4

METHODS = ["int8", "int4", "hqq", "easyquant", "gptq", "awq"]
TEXT = "The derivative of x squared is two x. Water boils at one hundred degrees Celsius. " * 6


def _ids(tok) -> torch.Tensor:
    return tok(TEXT, return_tensors="pt").input_ids


def _cfg(method: str, **kw) -> QuantizeConfig:
    # hidden 64: group 32 divides every layer; gptq calibrates on a few short gsm8k windows
    return QuantizeConfig(method=method, group_size=32, calib_samples=4, calib_seqlen=64, **kw)


@pytest.fixture(scope="module")
def artifacts(tiny_model, shared_data, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant")
    out = {m: quantize(str(tiny_model), root / m, _cfg(m), data_root=shared_data) for m in METHODS}
    out["int8-emb"] = quantize(
        str(tiny_model), root / "int8-emb", _cfg("int8", quantize_embedding=True)
    )
    return out


def test_every_method_reloads_in_a_fresh_process(artifacts, tiny_model, tmp_path):
    fp, tok = load_model(str(tiny_model))
    ids = _ids(tok)
    with torch.no_grad():
        fp_logits = fp(ids).logits.float()
    fp_ppl = Scorer(fp, tok, progress=False).token_perplexity(TEXT, 32, 16)["token_perplexity"]
    script = (
        "import json, sys, torch\n"
        "from zephyr.models import load_model\n"
        "from zephyr.eval.engine import Scorer\n"
        "ids = torch.tensor(json.loads(sys.argv[1]))\n"
        "out = {}\n"
        "for name, path in json.loads(sys.argv[2]).items():\n"
        "    m, t = load_model(path)\n"
        "    with torch.no_grad():\n"
        "        logits = m(ids).logits.float()\n"
        "    ppl = Scorer(m, t, progress=False).token_perplexity(sys.argv[4], 32, 16)\n"
        "    out[name] = {'logits': logits[0, -3:].tolist(), 'ppl': ppl['token_perplexity']}\n"
        "json.dump(out, open(sys.argv[3], 'w'))\n"
    )
    res = tmp_path / "res.json"
    paths = {k: str(v) for k, v in artifacts.items()}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(ids.tolist()), json.dumps(paths), str(res), TEXT],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(res.read_text())
    for name, path in artifacts.items():
        meta = json.loads((path / "quantization.json").read_text())
        assert meta["source"]["sha256"] and meta["provenance"]["versions"]["torch"]
        model, _ = load_model(str(path))  # the same artifact in this process: same numbers
        with torch.no_grad():
            here = model(ids).logits.float()[0, -3:]
        assert torch.allclose(here, torch.tensor(fresh[name]["logits"]), atol=1e-5), name
        drift = (here - fp_logits[0, -3:]).abs().mean() / fp_logits.abs().mean()
        ratio = fresh[name]["ppl"] / fp_ppl
        tol = 0.01 if name.startswith("int8") else 0.1
        assert drift < 10 * tol, (name, float(drift))
        assert abs(ratio - 1) < tol, (name, ratio)


def test_int4_runtime_matches_the_saved_codes():
    torch.manual_seed(0)
    w = torch.randn(96, 128)
    q = rtn.int4(w, 32)
    assert torch.equal(unpack_int4(pack_int4(q.q)), q.q)
    x = torch.randn(4, 128).bfloat16()
    y = torch.nn.functional.linear(x, q.runtime()).float()
    ref = x.float() @ q.dequantize().T
    assert (y - ref).abs().max() / ref.abs().mean() < 0.02  # bf16 output rounding only
    assert rel_error(w, q.dequantize()) < 0.02


def test_int8_error_is_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * 0.02
    q = rtn.int8(w)
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((w - q.dequantize()).abs() <= step / 2 + 1e-7).all()
    assert q.q.dtype == torch.int8


def test_easyquant_beats_rtn_and_keeps_outliers_exact(artifacts):
    torch.manual_seed(0)
    w = torch.randn(128, 256) * 0.02
    w[torch.rand_like(w) < 0.003] *= 8  # heavy tails, as in trained LLM weights
    eq = easyquant.int4(w, 64)
    assert eq.outlier_idx.numel() > 0
    deq = eq.dequantize()
    assert torch.equal(deq.reshape(-1)[eq.outlier_idx], w.reshape(-1)[eq.outlier_idx])
    assert rel_error(w, deq) < 0.8 * rel_error(w, rtn.int4(w, 64).dequantize())
    with_steps = easyquant.int4(w, 64, steps=5)  # the paper's gradient refinement also runs
    assert rel_error(w, with_steps.dequantize()) <= rel_error(w, deq) * 1.001
    # same verdict over the whole tiny model, from the artifacts' own records
    e = json.loads((artifacts["easyquant"] / "quantization.json").read_text())
    r = json.loads((artifacts["int4"] / "quantization.json").read_text())
    assert e["group_size"] == r["group_size"] == 32
    assert e["weight_rel_error"] < r["weight_rel_error"]
    assert 0 < e["outlier_fraction"] < 0.02


def test_easyquant_fast_search_loss_matches_the_reference():
    # the in-place search loss must rank ranges exactly like the autograd-friendly one
    torch.manual_seed(0)
    w = torch.randn(32, 128) * 0.02
    g = w.reshape(32, 2, 64)
    keep = (torch.rand_like(g) > 0.01).float()
    lo, hi = g.amin(-1) * 0.9, g.amax(-1) * 0.8
    ref = easyquant._group_loss(g, keep, lo, hi)
    assert torch.allclose(easyquant._search_loss(g, keep, lo, hi), ref, rtol=1e-4, atol=1e-12)


def test_method_labels():
    from zephyr.quantize.methods import config_for

    cfg = config_for("gptq-g32-emb", QuantizeConfig(group_size=64, calib_samples=8))
    assert (cfg.method, cfg.group_size, cfg.quantize_embedding) == ("gptq", 32, True)
    assert cfg.calib_samples == 8  # the rest comes from the base config
    assert config_for("int4").group_size == 64 and not config_for("int4").quantize_embedding
    for bad in ("int4-g48", "int4-fast", "nf4"):
        with pytest.raises(ZephyrError):
            config_for(bad)
    with pytest.raises(ZephyrError, match="--lora-base"):
        config_for("int4-g32-lora")  # nothing to keep the fine-tuning over
    cfg = config_for("easyquant-g32-emb-lora", QuantizeConfig(lora_base="smollm2-135m"))
    assert cfg.lora and cfg.quantize_embedding and cfg.group_size == 32
    assert label_of(cfg) == "easyquant-g32-emb-lora" and label_of(config_for("int8")) == "int8"


def test_outliers_are_exact_at_runtime(artifacts, tiny_model):
    from safetensors.torch import load_file

    name = "model.layers.0.mlp.down_proj"
    sd = load_file(str(artifacts["easyquant"] / "model.safetensors"))
    idx = sd[f"{name}.outlier_idx"].long()
    fp, _ = load_model(str(tiny_model))
    w = fp.get_submodule(name).weight.detach().float()
    assert torch.equal(sd[f"{name}.outlier_val"], w.reshape(-1)[idx])
    model, _ = load_model(str(artifacts["easyquant"]))
    lin = model.get_submodule(name)
    k = lin.in_features
    eff = lin(torch.eye(k, dtype=torch.bfloat16)).float().T.reshape(-1)  # effective weight
    assert torch.allclose(eff[idx], w.reshape(-1)[idx], rtol=1e-2, atol=1e-4)


def test_gptq_beats_rtn_on_output_error():
    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.02
    x = torch.randn(512, 8) @ torch.randn(8, 128) + 0.1 * torch.randn(512, 128)  # correlated inputs
    h = 2 * x.T @ x / len(x)
    g = gptq.quantize_weight(w, h, 32)
    r = rtn.int4(w, 32)
    out_err = lambda q: float((x @ (w - q.dequantize()).T).pow(2).mean())  # noqa: E731
    assert out_err(g) < 0.7 * out_err(r)


def test_awq_beats_rtn_when_some_input_channels_are_large():
    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.02
    x = torch.randn(512, 128)
    x[:, :4] *= 30  # a few salient channels, as in LLM activations
    absmean = x.abs().mean(0)
    a = awq.quantize_weight(w, absmean, x, 32)
    r = rtn.int4(w, 32)
    out_err = lambda q: float((x @ (w - q.dequantize()).T).pow(2).mean())  # noqa: E731
    assert a.act_scale is not None and out_err(a) < 0.8 * out_err(r)
    y = torch.nn.functional.linear(x[:8].bfloat16(), a.runtime()).float()  # act_pre_scale applied
    ref = x[:8] @ a.dequantize().T
    assert (y - ref).abs().max() / ref.abs().mean() < 0.05


def test_embedding_quantization_shrinks_the_file(artifacts):
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(artifacts["int8-emb"]) < 0.6 * size(artifacts["int8"])
    meta = json.loads((artifacts["int8-emb"] / "quantization.json").read_text())
    assert meta["embedding"] == "int8" and meta["embedding_rel_error"] < 1e-3


def test_indivisible_group_size_is_an_error_or_a_recorded_skip(tiny_model, tmp_path):
    with pytest.raises(ZephyrError, match="does not divide"):
        quantize(str(tiny_model), tmp_path / "a", QuantizeConfig(method="int4", group_size=128))
    assert not (tmp_path / "a").exists()
    p = quantize(
        str(tiny_model),
        tmp_path / "b",
        QuantizeConfig(method="int4", group_size=128, skip_indivisible=True),
    )
    meta = json.loads((p / "quantization.json").read_text())
    assert "model.layers.0.mlp.down_proj" in meta["layers"]  # in_features 128
    assert "model.layers.0.self_attn.q_proj" in meta["skipped"]  # in_features 64
    model, tok = load_model(str(p))
    assert torch.isfinite(model(_ids(tok)).logits).all()


def test_clear_errors(tiny_model, artifacts, tmp_path):
    with pytest.raises(ZephyrError, match="already quantized"):
        quantize(
            str(artifacts["int8"]), tmp_path / "y", QuantizeConfig(method="int4", group_size=32)
        )
    with pytest.raises(ZephyrError, match="group-size 48"):
        quantize(str(tiny_model), tmp_path / "z", QuantizeConfig(method="int4", group_size=48))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zephyr.cli",
            "quantize",
            str(tiny_model),
            "--method",
            "nope",
            "--out",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "unknown quantization method 'nope'" in proc.stderr


def test_adapter_is_merged_before_quantizing(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = load_model(str(tiny_model))
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(base, lora)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a visible update
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    base_w = (
        load_model(str(tiny_model))[0]
        .get_submodule("model.layers.0.self_attn.q_proj")
        .weight.detach()
        .float()
    )
    merged_w = (
        load_model(str(adapter))[0]
        .get_submodule("model.layers.0.self_attn.q_proj")
        .weight.detach()
        .float()
    )
    assert rel_error(merged_w, base_w) > 1e-2
    p = quantize(str(adapter), tmp_path / "q", QuantizeConfig(method="int8"))
    from safetensors.torch import load_file

    from zephyr.quantize.qweight import Int8Weight

    q = Int8Weight.from_tensors(
        load_file(str(p / "model.safetensors")), "model.layers.0.self_attn.q_proj"
    )
    assert rel_error(merged_w, q.dequantize()) < 1e-3  # the merged fp weights were quantized
    assert rel_error(base_w, q.dequantize()) > 1e-2


def test_peak_rss_is_the_childs_own_not_the_parents():
    """ru_maxrss survives fork + exec; the comparison must report each model's own process."""
    import subprocess
    import sys

    ballast = bytearray(400 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: the parent is >400 MB
    code = "from zephyr.quantize.compare import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 300, "a small child must not report its parent's 400 MB"
    del ballast


def test_wikitext_prefix_tokenization_matches_the_full_file(tiny_model, shared_data):
    # compare tokenizes only a prefix of test.txt: the ids must be those of the whole file
    from zephyr.quantize.compare import wikitext_ids

    _, tok = load_model(str(tiny_model))
    text = (shared_data / "wikitext-2" / "test.txt").read_text(encoding="utf-8")
    full = tok(text[:200_000], add_special_tokens=False)["input_ids"]
    for n in (100, 3000):
        assert wikitext_ids(tok, shared_data, n) == full[:n]


@pytest.fixture(scope="module")
def finetune(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """(base, tuned): the demo's situation in miniature. The base's linears already lie on the
    int4 g32 grid (M0 was unpacked from a Q4_1 GGUF); the tuned model adds a rank-2 delta to
    each, smaller than half a 4-bit step (M2's LoRA deltas are a relative 5e-5)."""
    root = tmp_path_factory.mktemp("finetune")
    model, tok = load_model(str(tiny_model))
    torch.manual_seed(1)
    with torch.no_grad():
        for mod in targets_of(model).values():
            mod.weight.copy_(rtn.int4(mod.weight.float(), 32).dequantize())
        model.save_pretrained(root / "base")
        tok.save_pretrained(root / "base")
        for mod in targets_of(model).values():
            d = torch.randn(mod.weight.shape[0], 2) @ torch.randn(2, mod.weight.shape[1])
            mod.weight.add_(d * (0.03 * mod.weight.norm() / d.norm()))
    model.save_pretrained(root / "tuned")
    tok.save_pretrained(root / "tuned")
    return root / "base", root / "tuned"


def test_lora_variant_keeps_a_finetune_that_rounding_would_erase(finetune, tmp_path):
    base_dir, tuned_dir = finetune
    model, tok = load_model(str(tuned_dir))
    tuned = str(tuned_dir)
    merged = quantize(tuned, tmp_path / "merged", QuantizeConfig(method="int4", group_size=32))
    cfg = QuantizeConfig(method="int4", group_size=32, lora=True, lora_base=str(base_dir))
    kept = quantize(tuned, tmp_path / "kept", cfg)
    meta = json.loads((kept / "quantization.json").read_text())
    assert {v["lora_rank"] for v in meta["layers"].values()} == {2}  # the delta's rank, found
    assert meta["lora"]["delta_rel_residual"] < 1e-4
    merged_err = json.loads((merged / "quantization.json").read_text())["weight_rel_error"]
    assert merged_err > 1e-4 and meta["weight_rel_error"] < merged_err / 20

    ids = _ids(tok)
    with torch.no_grad():
        ref = model(ids).logits.float()[0]
        base_logits = load_model(str(base_dir))[0](ids).logits.float()[0]
        kept_logits = load_model(str(kept))[0](ids).logits.float()[0]
        merged_logits = load_model(str(merged))[0](ids).logits.float()[0]
    tuning = (ref - base_logits).abs().mean()
    assert (merged_logits - ref).abs().mean() > 0.5 * tuning  # rounding undid most of it
    assert (kept_logits - ref).abs().mean() < 0.2 * tuning  # the kept factors did not
    script = (
        "import sys, torch\n"
        "from zephyr.models import load_model\n"
        "m, tok = load_model(sys.argv[1])\n"
        "ids = tok(sys.argv[2], return_tensors='pt').input_ids\n"
        "print(m(ids).logits[0, -1, :5].float().tolist())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(kept), TEXT], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert torch.allclose(fresh, kept_logits[-1, :5], atol=1e-5)  # reloads with its factors
    with pytest.raises(ZephyrError, match="lora-base"):
        quantize(tuned, tmp_path / "bad", QuantizeConfig(method="int4", lora=True))


def test_artifacts_work_in_eval_chat_and_serve(artifacts, finetune, shared_data, tmp_path):
    # the three runtime paths: int4 with outlier hooks (bf16), int8 with the int8 embedding,
    # and a quantized base with the fine-tuning kept as low-rank factors
    import httpx
    from typer.testing import CliRunner

    from zephyr.cli import app
    from zephyr.tutor.audit import Audit
    from zephyr.tutor.policy import Policy
    from zephyr.tutor.server import ServeConfig, create_app, running

    base_dir, tuned_dir = finetune
    lora = QuantizeConfig(method="int4", group_size=32, lora=True, lora_base=str(base_dir))
    paths = {
        "easyquant": artifacts["easyquant"],
        "int8-emb": artifacts["int8-emb"],
        "int4-g32-lora": quantize(str(tuned_dir), tmp_path / "lora", lora),
    }
    runner = CliRunner()
    for name, path in paths.items():
        out = tmp_path / f"{name}.json"
        args = ["eval", str(path), "--tasks", "arc_easy", "--limit", "2"]
        r = runner.invoke(app, [*args, "--data-dir", str(shared_data), "--json", str(out)])
        assert r.exit_code == 0, (name, r.output)
        assert json.loads(out.read_text())["tasks"]["arc_easy"]["n"] == 2, name
        args = ["chat", str(path), "--max-tokens", "4", "--temperature", "0", "--no-audit"]
        r = runner.invoke(app, args, input="What is 2 + 2?\n/quit\n")
        assert r.exit_code == 0 and "tutor> " in r.output, (name, r.output)
        model, tok = load_model(str(path))
        server = create_app(
            model, tok, name, ServeConfig(), Audit(tmp_path / "a.sqlite"), Policy.load()
        )
        with running(server) as url:
            body = {
                "model": name,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "temperature": 0,
            }
            resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert resp.status_code == 200, (name, resp.text)
        assert 1 <= resp.json()["usage"]["completion_tokens"] <= 4, name
