"""`zephyr eval --engine llamacpp`: generation tasks through llama.cpp give the HF path's outputs.

llama_cpp is imported at the top on purpose: without it this module fails, it never skips.
"""

from __future__ import annotations

import llama_cpp  # noqa: F401  (fail, never skip, when the llama.cpp bindings are missing)
import pytest
from typer.testing import CliRunner

from zephyr.cli import app
from zephyr.errors import ZephyrError
from zephyr.eval.run import evaluate
from zephyr.io import read_jsonl


def test_gsm8k_same_outputs_and_metrics(peaked_model, shared_data, tmp_path):
    common = dict(
        data_dir=shared_data,
        limit=10,
        num_fewshot=1,
        options={"gsm8k": {"max_new_tokens": 24}},
    )
    hf = evaluate(str(peaked_model), ["gsm8k"], log_dir=tmp_path / "hf", **common)
    ll = evaluate(
        str(peaked_model), ["gsm8k"], log_dir=tmp_path / "ll", engine="llamacpp", **common
    )
    out_hf = [r["output"] for r in read_jsonl(tmp_path / "hf" / "gsm8k.jsonl")]
    out_ll = [r["output"] for r in read_jsonl(tmp_path / "ll" / "gsm8k.jsonl")]
    share = sum(a == b for a, b in zip(out_hf, out_ll, strict=True)) / len(out_hf)
    print(f"identical greedy gsm8k outputs: {share:.0%} of {len(out_hf)}")
    assert len(set(out_hf)) > 3 and share >= 0.7
    m_hf, m_ll = hf["tasks"]["gsm8k"]["metrics"], ll["tasks"]["gsm8k"]["metrics"]
    assert m_hf["em_flexible"] == m_ll["em_flexible"]
    for key in ("bleu4", "rouge1", "rougeL"):
        assert abs(m_hf[key] - m_ll[key]) <= 0.3 * max(m_hf[key], 1.0)
    assert ll["provenance"]["config"]["engine"] == "llamacpp"


def test_eval_cli_engine_flag(peaked_model, shared_data, tmp_path):
    out = tmp_path / "r.json"
    args = ["eval", str(peaked_model), "--tasks", "gsm8k", "--limit", "2", "--num-fewshot", "0"]
    args += ["--data-dir", str(shared_data), "--engine", "llamacpp", "--json", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert out.is_file()
    r = CliRunner().invoke(app, [*args[:-4], "--engine", "vllm"])
    assert r.exit_code == 2 and "unknown --engine 'vllm'" in r.output


def test_engine_choice(peaked_model, monkeypatch):
    from zephyr.tutor import engines
    from zephyr.tutor.engines import EngineOptions, load_engine

    model, _, used = load_engine(str(peaked_model), EngineOptions("llamacpp", parallel=1, ctx=64))
    assert used == "llamacpp" and model.is_llamacpp
    model.close()
    assert load_engine(str(peaked_model), EngineOptions("hf"))[2] == "hf"
    with pytest.raises(ZephyrError, match="unknown --engine"):
        load_engine(str(peaked_model), EngineOptions("onnx"))
    # auto falls back to transformers when llama.cpp is not there; llamacpp says how to get it
    monkeypatch.setattr(engines, "llamacpp_available", lambda: False)
    assert load_engine(str(peaked_model), EngineOptions("auto"))[2] == "hf"
    with pytest.raises(ZephyrError, match="make setup"):
        load_engine(str(peaked_model), EngineOptions("llamacpp"))
