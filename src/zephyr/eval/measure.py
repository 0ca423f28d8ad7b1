"""Size on disk and greedy generation speed of a model: the one definition of each that Table 1
(the eval stage) and Table 2 (`zephyr quantize --compare`) both report, so a model's disk MB and
tok/s mean the same in both tables. A leaf: it imports nothing of the report or of quantize."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SPEED_PROMPT = "Explain step by step why the sum of the angles of a triangle is 180 degrees."
WARMUP_TOKENS = 4


def disk_mb(spec: str) -> float:
    """Megabytes (10^6 bytes) of the model's weight files: the file itself (a .gguf) or every
    weight file under its folder (safetensors, bin, pt, pth, gguf)."""
    from zephyr.models import resolve

    path = Path(resolve(spec))
    files = (
        [path] if path.is_file() else [f for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES]
    )
    return sum(f.stat().st_size for f in files) / 1e6


def model_size(model: Any, spec: str) -> dict:
    """Table 1's size columns: parameters of the loaded model and its weights' disk MB."""
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "disk_mb": round(disk_mb(spec), 1)}


def gen_speed(model: Any, tokenizer: Any, n: int, runs: int = 1) -> dict:
    """Greedy decoding speed at batch 1: exactly `n` new tokens after a fixed chat prompt and a
    short warm-up; the median of `runs` timed generations."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": SPEED_PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"].to(model.device)
    kw = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    times = []
    with torch.inference_mode():
        model.generate(max_new_tokens=WARMUP_TOKENS, min_new_tokens=WARMUP_TOKENS, **kw)
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            model.generate(max_new_tokens=n, min_new_tokens=n, **kw)
            times.append(time.perf_counter() - t0)
    return {
        "tokens_per_s": round(n / statistics.median(times), 2),
        "new_tokens": n,
        "batch": 1,
        "prompt_tokens": int(ids.shape[1]),
    }
