"""Pieces every trainer uses around the loop: accelerator, model + LoRA, row caps, saving."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import torch

from zephyr import device, provenance
from zephyr.device import Precision
from zephyr.io import atomic_dir, read_jsonl, write_json
from zephyr.train.attention import use_fp32_attention
from zephyr.train.config import TrainConfig
from zephyr.train.logprobs import add_lora, bf16_supported
from zephyr.train.plots import plot_metrics


def accelerator(prec: Precision | None = None, cfg: TrainConfig | None = None, out_dir=None):
    """accelerate's Accelerator for `prec` (default: fp32 on the auto-picked device), with the
    trackers `cfg.report_to` names (writing under out_dir/tracking)."""
    from zephyr.train import tracking

    prec = prec if prec is not None else device.precision(device.pick(), False)
    trackers = tracking.check(cfg.report_to) if cfg is not None else []
    where = tracking.tracking_dir(out_dir) if trackers and out_dir is not None else None
    return device.accelerator(prec, trackers, where)


def train_precision(cfg: TrainConfig, name: str = "auto") -> Precision:
    """Device (`--device` / recipe `device`) and autocast dtype of a training run (zephyr.device)."""
    return device.precision(device.pick(name), cfg.bf16)


def use_bf16(cfg: TrainConfig) -> bool:
    return cfg.bf16 and bf16_supported()


def load_policy(
    spec: str, cfg: TrainConfig, seed: int, prec: Precision | None = None, where: Any = None
) -> tuple[Any, Any]:
    """See _load_policy; `where` is the accelerator (its device; FSDP: fp32 storage)."""
    if where is None or not hasattr(where, "distributed_type"):
        return _load_policy(spec, cfg, seed, prec, where)
    if prec is not None and where.distributed_type.value == "FSDP":
        # FSDP flattens each wrapped layer's parameters into one tensor of one dtype: the frozen
        # base stays fp32 beside the fp32 adapter, and FSDP's own bf16 policy casts for compute
        prec = Precision(prec.device, None)
    return _load_policy(spec, cfg, seed, prec, where.device)


def _load_policy(
    spec: str, cfg: TrainConfig, seed: int, prec: Precision | None = None, where: Any = None
) -> tuple[Any, Any]:
    """Base model + a fresh fp32 LoRA adapter, identically seeded on every process, on `where`.

    With mixed precision the frozen base weights are stored in the autocast dtype: autocast would
    otherwise re-cast every fp32 weight on every forward (frozen weights are not in autocast's
    cache), which costs more than the matmul on this CPU, and memory halves. The adapter stays
    fp32 (PEFT's autocast_adapter_dtype); the merged model is built from the fp32 base (save_outputs).
    """
    from zephyr.models import load_model

    if prec is None:
        dtype = "bfloat16" if use_bf16(cfg) else "float32"
    else:
        dtype = prec.weights_dtype
    model, tok = load_model(spec, dtype=dtype)
    if dtype == "bfloat16" and (prec is None or prec.device == "cpu"):
        # CPU bf16 attention backward is ~3x slower than fp32 (attention.py)
        use_fp32_attention(model)
    torch.manual_seed(seed)
    lm = add_lora(model, cfg.lora, cfg.gradient_checkpointing)
    return (lm.to(where) if where is not None else lm), tok


def capped_rows(path: Path, cap: int, seed: int) -> list[dict]:
    """All rows, or the first `cap` after a seeded shuffle."""
    rows = read_jsonl(path)
    if 0 < cap < len(rows):
        rng = random.Random(seed)
        rows = rng.sample(rows, cap)
    return rows


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def save_outputs(
    lm: Any, tok: Any, out_dir: Path, cfg: TrainConfig, inputs: list[Path], **extra: Any
) -> dict:
    """adapter/, model/ (merged, what later stages load), plots/, train.json. Main process only."""
    from zephyr.io import read_jsonl as _rows

    # built in a temp sibling, then swapped in: the old adapter/ and model/ stay until the new is whole
    with atomic_dir(out_dir / "adapter") as d:
        lm.save_pretrained(d)
        tok.save_pretrained(d)
    if cfg.merge:
        from zephyr.models import load_model

        # merge into the fp32 base: a LoRA delta added to bf16 weights would mostly round away
        merged, _ = load_model(out_dir / "adapter", dtype="float32")

        with atomic_dir(out_dir / "model") as d:
            merged.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
    rows = _rows(out_dir / "metrics.jsonl") if (out_dir / "metrics.jsonl").exists() else []
    plot_metrics(rows, out_dir / "plots")
    final = [r for r in rows if "val_loss" in r]
    from zephyr.tutor.calculator import training_marker, write_marker

    calc = training_marker(inputs, extra.get("base"))  # trained on <<expr=result>> annotations?
    for d in ("adapter", "model"):
        write_marker(out_dir / d, calc)
    info = provenance.record(
        dataclasses.asdict(cfg),
        inputs=inputs,
        calculator=calc,
        first_eval=final[0] if final else None,
        final_eval=final[-1] if final else None,
        **extra,
    )
    write_json(out_dir / "train.json", info)
    from zephyr.train import card

    card.write(out_dir / "adapter", cfg, info, inputs, "peft")  # replaces PEFT's empty template
    if cfg.merge:
        card.write(out_dir / "model", cfg, info, inputs, "transformers")
    return info
