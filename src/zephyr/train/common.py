"""Pieces every trainer uses around the loop: accelerator, model + LoRA, row caps, saving."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zephyr import provenance
from zephyr.io import read_jsonl, write_json
from zephyr.train.attention import use_fp32_attention
from zephyr.train.config import TrainConfig
from zephyr.train.plots import plot_metrics
from zephyr.train.policy import add_lora, bf16_supported


def accelerator():
    from accelerate import Accelerator

    # cpu=True without CUDA: under torchrun-style launches (recipes/accelerate/cpu_2proc.yaml) the
    # processes then join one gloo group instead of each training alone.
    return Accelerator(cpu=not torch.cuda.is_available())


def use_bf16(cfg: TrainConfig) -> bool:
    return cfg.bf16 and bf16_supported()


def load_policy(spec: str, cfg: TrainConfig, seed: int) -> tuple[Any, Any]:
    """Base model + a fresh fp32 LoRA adapter, identically seeded on every process.

    With bf16 the frozen base weights are stored in bf16: autocast would otherwise re-cast every
    fp32 weight on every forward (frozen weights are not in autocast's cache), which costs more
    than the matmul on this CPU, and memory halves. The adapter stays fp32 (PEFT's
    autocast_adapter_dtype); the merged model is built from the fp32 base (save_outputs).
    """
    from zephyr.models import load_model

    model, tok = load_model(spec, dtype="bfloat16" if use_bf16(cfg) else "float32")
    if use_bf16(cfg) and not torch.cuda.is_available():
        # CPU bf16 attention backward is ~3x slower than fp32 (attention.py)
        use_fp32_attention(model)
    torch.manual_seed(seed)
    return add_lora(model, cfg.lora, cfg.gradient_checkpointing), tok


def capped_rows(path: Path, cap: int, seed: int) -> list[dict]:
    """All rows, or the first `cap` after a seeded shuffle."""
    rows = read_jsonl(path)
    if 0 < cap < len(rows):
        rng = random.Random(seed)
        rows = rng.sample(rows, cap)
    return rows


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _save_dir(dest: Path, write) -> None:
    """Write a directory into a temp sibling, then swap it in (no half-written model/)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_outputs(
    lm: Any, tok: Any, out_dir: Path, cfg: TrainConfig, inputs: list[Path], **extra: Any
) -> dict:
    """adapter/, model/ (merged, what later stages load), plots/, train.json. Main process only."""
    from zephyr.io import read_jsonl as _rows

    def adapter(d: Path) -> None:
        lm.save_pretrained(d)
        tok.save_pretrained(d)

    _save_dir(out_dir / "adapter", adapter)
    if cfg.merge:
        from zephyr.models import load_model

        # merge into the fp32 base: a LoRA delta added to bf16 weights would mostly round away
        merged, _ = load_model(out_dir / "adapter", dtype="float32")

        def model(d: Path) -> None:
            merged.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)

        _save_dir(out_dir / "model", model)
    rows = _rows(out_dir / "metrics.jsonl") if (out_dir / "metrics.jsonl").exists() else []
    plot_metrics(rows, out_dir / "plots")
    final = [r for r in rows if "val_loss" in r]
    info = provenance.record(
        dataclasses.asdict(cfg),
        inputs=inputs,
        first_eval=final[0] if final else None,
        final_eval=final[-1] if final else None,
        **extra,
    )
    write_json(out_dir / "train.json", info)
    return info
