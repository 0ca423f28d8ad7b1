"""Does a GGUF compute what the HF model computes? Token log-probs of both on the same ids.

Used by the parity tests and bench/bench_export.py: perplexity = exp(mean negative log-prob of
every token after the first of each window), the same windows and ids for both sides.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from zephyr.errors import ZephyrError


def _log_softmax_at(logits: np.ndarray, targets: list[int]) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max(-1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    return logits[np.arange(len(targets)), targets] - lse


def gguf_logprobs(
    gguf: str | Path, windows: list[list[int]], threads: int | None = None
) -> list[np.ndarray]:
    """Per window, log p(ids[t] | ids[:t]) for t >= 1 from llama.cpp (one pass per window)."""
    import llama_cpp
    from llama_cpp import _logger

    from zephyr.tutor.engine_llamacpp import default_threads, model_params

    _logger.set_verbose(False)
    width = max(len(w) for w in windows)
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params(llama_cpp))
    if not model:
        raise ZephyrError(f"llama.cpp could not load {gguf}")
    p = llama_cpp.llama_context_default_params()
    p.n_ctx = p.n_batch = p.n_ubatch = width
    p.n_threads = p.n_threads_batch = threads or default_threads()
    ctx = llama_cpp.llama_init_from_model(model, p)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    batch = llama_cpp.llama_batch_init(width, 0, 1)
    out = []
    try:
        for ids in windows:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            for i, tok in enumerate(ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, 1
            batch.n_tokens = len(ids)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise ZephyrError(f"llama.cpp could not decode a window of {len(ids)} tokens")
            ptr = llama_cpp.llama_get_logits(ctx)
            logits = np.ctypeslib.as_array(ptr, shape=(len(ids), n_vocab))[:-1]
            out.append(_log_softmax_at(logits, list(ids[1:])))
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return out


def hf_logprobs(model: Any, windows: list[list[int]]) -> list[np.ndarray]:
    """The same numbers from a transformers model (fp32 log-softmax)."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in windows:
            logits = model(torch.tensor([ids], device=model.device)).logits[0, :-1].float()
            out.append(_log_softmax_at(logits.cpu().numpy(), list(ids[1:])))
    return out


def perplexity(logprobs: list[np.ndarray]) -> float:
    flat = np.concatenate(logprobs)
    return float(math.exp(-flat.mean()))


def windows_of(ids: list[int], width: int, count: int | None = None) -> list[list[int]]:
    """Consecutive non-overlapping windows of `width` tokens (the last partial one dropped)."""
    wins = [ids[i : i + width] for i in range(0, len(ids) - width + 1, width)]
    return wins[:count] if count else wins
