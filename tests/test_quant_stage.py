"""The quantize pipeline stage with its comparison, and QLoRA, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

from zephyr.models import load_model
from zephyr.pipeline import Recipe, StageContext
from zephyr.quantize import stage
from zephyr.quantize.qlora import QLoRAConfig, train


def test_stage_quantizes_and_compares(tiny_model, shared_data, tmp_path):
    recipe = Recipe(model=str(tiny_model), data_root=str(shared_data))
    section = {
        "methods": ["int8-emb"],  # a label: int8 linears, -emb adds the int8 embedding
        "ppl_tokens": 256,
        "gen_runs": 1,
        "eval_limit": 2,  # accuracy columns on the same 2 items per task, with intervals
    }
    ctx = StageContext("quantize", recipe, section, tmp_path, {}, tmp_path, Console(quiet=True))
    stage.run(ctx)
    assert (tmp_path / "int8-emb" / "quantization.json").exists()
    report = json.loads((tmp_path / "compare.json").read_text())
    rows = report["models"]
    assert set(rows) == {"fp32", "bf16", "int8-emb"}
    assert rows["fp32"]["size_x_fp32"] == 1.0
    assert rows["int8-emb"]["embedding"] == "int8" and rows["int8-emb"]["bits"] == 8
    assert rows["int8-emb"]["size_x_fp32"] < 0.3  # int8 linears and embedding: about a quarter
    assert abs(rows["int8-emb"]["ppl_x_fp32"] - 1) < 0.01
    assert abs(rows["bf16"]["ppl_x_fp32"] - 1) < 0.02
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["ppl_detail"]["tokens"] >= 200
        for task in ("hellaswag", "arc_challenge", "mmlu"):
            acc = r["tasks"][task]
            assert acc["n"] == 2 and acc["ci95"][0] <= acc["value"] <= acc["ci95"][1], task
    assert r["quantize_s"] > 0  # the last row is an artifact: its quantization time is kept
    console = Console(record=True, width=400)
    stage.print_table(report, console)
    text = console.export_text()
    assert "mmlu (n=2)" in text and "int8-emb" in text
    assert json.loads((tmp_path / "quantize.json").read_text())["source"] == str(tiny_model)


def test_qlora_trains_an_adapter_on_an_nf4_base(tiny_model, shared_data, tmp_path):
    cfg = QLoRAConfig(steps=3, batch_size=2, seqlen=32, rank=4, alpha=8, lr=1e-2)
    out = train(str(tiny_model), tmp_path / "qlora", cfg, shared_data, Console(quiet=True))
    info = json.loads((out / "qlora.json").read_text())
    assert len(info["losses"]) == 3 and all(l == l for l in info["losses"])  # noqa: E741
    assert (out / "adapter_config.json").exists() and (out / "metrics.jsonl").exists()
    # the adapter goes onto the unquantized base: load_model merges it into fp weights
    merged, _ = load_model(str(out))
    base, _ = load_model(str(tiny_model))
    name = "model.layers.0.self_attn.q_proj"
    delta = merged.get_submodule(name).weight - base.get_submodule(name).weight
    assert float(delta.abs().max()) > 0  # training moved lora_B off its zero init
    assert merged.get_submodule(name).weight.dtype == torch.float32
    assert Path(
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    ) == Path(tiny_model)
    # QLoRA inference: the stage quantizes the base and keeps this adapter's delta (-lora);
    # the factorisation finds the adapter's rank again (4), and layers it left alone get none
    recipe = Recipe(model=str(tiny_model), data_root=str(shared_data))
    section = {"methods": ["int4-g32-lora"], "source": str(out), "compare": False}
    ctx = StageContext(
        "quantize", recipe, section, tmp_path / "q", {}, tmp_path, Console(quiet=True)
    )
    stage.run(ctx)
    meta = json.loads((tmp_path / "q/int4-g32-lora/quantization.json").read_text())
    ranks = {n: v.get("lora_rank", 0) for n, v in meta["layers"].items()}
    assert meta["lora"]["base"] == str(tiny_model) and max(ranks.values()) == 4
    assert ranks[name] == 4 and meta["lora"]["delta_rel_residual"] < 1e-4
    assert meta["weight_rel_error"] < 1e-2
