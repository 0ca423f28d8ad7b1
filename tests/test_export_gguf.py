"""`zephyr export --format gguf`: llama.cpp's converter and quantizer, parity with the HF model.

llama_cpp is imported at the top on purpose: without it (it is installed by `make setup`) this
module fails to collect instead of skipping.
"""

from __future__ import annotations

import json

import llama_cpp  # noqa: F401  (fail, never skip, when the llama.cpp bindings are missing)
import pytest
from typer.testing import CliRunner

from zephyr.cli import app
from zephyr.errors import ZephyrError
from zephyr.export.gguf import export_gguf, read_chat_template
from zephyr.export.parity import gguf_logprobs, hf_logprobs, perplexity, windows_of

PROMPTS = [
    "What is 2+3?",
    "Explain photosynthesis.",
    "A car travels 60 km in 1.5 h. What is its speed?",
    "Define entropy.",
    "Solve x^2 = 9.",
    "What is a prime number?",
    "Why is the sky blue?",
    "Convert 5 km to miles.",
    "What is Newton's second law?",
    "How many sides does a hexagon have?",
]
TEXT = " ".join(PROMPTS) * 8


@pytest.fixture(scope="module")
def hf(peaked_model):
    from zephyr.models import load_model

    return load_model(str(peaked_model))


def test_f16_perplexity_within_half_a_percent(hf, peaked_gguf):
    model, tok = hf
    windows = windows_of(tok.encode(TEXT), 96, 3)
    ppl_hf = perplexity(hf_logprobs(model, windows))
    ppl_gguf = perplexity(gguf_logprobs(peaked_gguf, windows, threads=1))
    print(f"perplexity hf {ppl_hf:.1f} gguf-f16 {ppl_gguf:.1f} ratio {ppl_gguf / ppl_hf:.5f}")
    assert abs(ppl_gguf / ppl_hf - 1) < 0.005


def test_f16_greedy_continuations_match(hf, peaked_gguf):
    from zephyr.tutor.engine_llamacpp import LlamaCppEngine
    from zephyr.tutor.generate import GenParams, generate

    model, tok = hf
    engine = LlamaCppEngine(peaked_gguf, parallel=2, ctx=256, threads=1)
    try:
        params = GenParams(max_tokens=24, temperature=0)
        pairs = [
            (generate(model, tok, m, params).text, generate(engine, tok, m, params).text)
            for m in ([{"role": "user", "content": p}] for p in PROMPTS)
        ]
    finally:
        engine.close()
    share = sum(a == b for a, b in pairs) / len(pairs)
    print(f"identical greedy continuations: {share:.0%} of {len(pairs)}")
    assert len({a for a, _ in pairs}) > 3  # the texts differ by prompt: the check means something
    assert share >= 0.7


def test_gguf_carries_chat_template_and_modelfile(peaked_model, peaked_gguf):
    from zephyr.models import load_tokenizer

    assert read_chat_template(peaked_gguf) == load_tokenizer(str(peaked_model)).chat_template
    modelfile = peaked_gguf.with_suffix(".Modelfile").read_text()
    assert f"FROM ./{peaked_gguf.name}" in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "SYSTEM" in modelfile
    # atomic: nothing but the two outputs is left in the folder
    assert sorted(p.name for p in peaked_gguf.parent.iterdir()) == [
        "peaked-f16.Modelfile",
        "peaked-f16.gguf",
    ]


def test_quants_are_smaller_and_close(hf, peaked_model, peaked_gguf, tmp_path):
    model, tok = hf
    windows = windows_of(tok.encode(TEXT), 96, 2)
    ref = perplexity(hf_logprobs(model, windows))
    f16 = peaked_gguf.stat().st_size
    for quant, tol in (("q8_0", 0.02), ("q4_k_m", 0.5)):
        done = export_gguf(str(peaked_model), quant, out=tmp_path / f"m-{quant}.gguf", threads=1)
        assert done.bytes < f16
        ppl = perplexity(gguf_logprobs(done.gguf, windows, threads=1))
        print(f"{quant}: {done.bytes} bytes (f16 {f16}), perplexity ratio {ppl / ref:.4f}")
        assert abs(ppl / ref - 1) < tol


def test_adapter_is_merged_before_export(hf, peaked_model, peaked_gguf, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from zephyr.models import load_model

    base, tok = load_model(str(peaked_model))
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a real change (B starts at zero)
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(peaked_model)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))

    done = export_gguf(str(adapter), "f16", out=tmp_path / "adapter-f16.gguf")
    merged, _ = load_model(str(adapter))
    windows = windows_of(tok.encode(TEXT), 64, 2)
    ppl_merged = perplexity(hf_logprobs(merged, windows))
    ppl_gguf = perplexity(gguf_logprobs(done.gguf, windows, threads=1))
    ppl_base = perplexity(gguf_logprobs(peaked_gguf, windows, threads=1))
    assert abs(ppl_gguf / ppl_merged - 1) < 0.005
    assert abs(ppl_base / ppl_merged - 1) > 0.01  # the adapter changed the model


def test_cli_and_errors(peaked_model, tmp_path):
    out = tmp_path / "cli" / "tiny-q8.gguf"
    r = CliRunner().invoke(
        app, ["export", str(peaked_model), "--format", "gguf", "--quant", "q8_0", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.with_suffix(".Modelfile").is_file()

    r = CliRunner().invoke(app, ["export", str(peaked_model), "--quant", "q3"])
    assert r.exit_code == 2 and "unknown --quant 'q3'" in r.output
    r = CliRunner().invoke(app, ["export", str(peaked_model), "--format", "onnx"])
    assert r.exit_code == 2 and "unknown --format" in r.output
    with pytest.raises(ZephyrError, match="must end in .gguf"):
        export_gguf(str(peaked_model), "f16", out=tmp_path / "x.bin")
    fake = tmp_path / "quantized"
    fake.mkdir()
    (fake / "quantization.json").write_text("{}")
    with pytest.raises(ZephyrError, match="quantized artifact"):
        export_gguf(str(fake), "f16", out=tmp_path / "q.gguf")


def test_converter_files_come_from_the_sdist(tmp_path, monkeypatch):
    import io
    import tarfile

    from zephyr.export import converter

    sdist = tmp_path / "llama_cpp_python-0.0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in (
            "vendor/llama.cpp/convert_hf_to_gguf.py",
            "vendor/llama.cpp/conversion/llama.py",
            "vendor/llama.cpp/gguf-py/gguf/__init__.py",
            "vendor/llama.cpp/src/llama.cpp",  # not needed by the converter
            "llama_cpp/llama.py",
        ):
            data = f"# {name}\n".encode()
            info = tarfile.TarInfo(f"llama_cpp_python-0.0.1/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "tools"
    converter._extract(sdist, out)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["conversion/llama.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    monkeypatch.setenv(converter.ENV, str(out))
    assert converter.converter_dir() == out
    monkeypatch.setenv(converter.ENV, str(tmp_path))
    with pytest.raises(ZephyrError, match="has no convert_hf_to_gguf.py"):
        converter.converter_dir()
    monkeypatch.delenv(converter.ENV)
    assert (converter.converter_dir(fetch=False) / converter.SCRIPT).is_file()  # make setup did it


def test_engine_cache_keeps_the_newest(tmp_path):
    import os

    from zephyr.export.gguf import _prune

    for i in range(5):
        f = tmp_path / f"m{i}-f16.gguf"
        f.write_bytes(b"x")
        f.with_suffix(".Modelfile").write_text("FROM x")
        os.utime(f, (1000 + i, 1000 + i))
    _prune(tmp_path, keep=tmp_path / "m0-f16.gguf", most=3)
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == [
        "m0-f16.gguf",
        "m3-f16.gguf",
        "m4-f16.gguf",
    ]
    assert not (tmp_path / "m1-f16.Modelfile").exists()
