"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer (seconds, not minutes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZEPHYR_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_tiny_model(out: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a random Llama (a few hidden units) with the embedded model's tokenizer to `out`."""
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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
