"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer (seconds, not minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZEPHYR_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_tiny_model(
    out: Path, seed: int = 0, hidden: int = 64, layers: int = 2, init_std: float = 0.02
) -> Path:
    """Save a random Llama (a few hidden units) with the embedded model's tokenizer to `out`.

    `init_std` 0.3 (instead of 0.02) gives peaked logits: greedy text varies with the prompt
    instead of repeating one token, which the engine parity tests need.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from zephyr.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a tiny random model directory (hidden 64, 2 layers, real tokenizer)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """(model, tokenizer) of the tiny model, on one torch thread (a hidden-64 model gains nothing
    from more; restored after). Module scope: each test file loads its own copy, as before."""
    import torch

    from zephyr.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(tiny_model)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def peaked_model(tmp_path_factory) -> Path:
    """A tiny random model with peaked logits (init std 0.3): varied greedy text."""
    return make_tiny_model(tmp_path_factory.mktemp("peaked-model"), init_std=0.3)


@pytest.fixture(scope="session")
def peaked_gguf(peaked_model, tmp_path_factory) -> Path:
    """`peaked_model` exported to an f16 GGUF by `zephyr export` (llama.cpp's converter)."""
    from zephyr.export.gguf import export_gguf

    out = tmp_path_factory.mktemp("peaked-gguf") / "peaked-f16.gguf"
    return export_gguf(str(peaked_model), "f16", out=out).gguf


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


class ScriptedLogits:
    """A logits processor forcing a fixed token sequence first: a model that 'writes' `<<expr=`
    (tests of the calculator hook on both engines import it from here)."""

    def __init__(self, ids: list[int], prompt_len: int):
        self.ids, self.prompt_len = ids, prompt_len

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        if step < len(self.ids):
            scores[:, :] = float("-inf")
            scores[:, self.ids[step]] = 0.0
        return scores
