"""Which engine chat and serve take: the calculator and GPUs need transformers (tutor/cli.py)."""

from __future__ import annotations

import pytest

from zephyr.errors import ZephyrError
from zephyr.tutor.cli import load_generator

OPTS = {"quant": "f16", "parallel": 1, "ctx": 256, "threads": 1}


def test_auto_takes_llamacpp_without_the_calculator(tiny_model):
    _, _, used = load_generator(str(tiny_model), "auto", OPTS, "float32", "cpu", calculator=False)
    assert used == "llamacpp"


def test_auto_takes_hf_when_the_calculator_is_on(tiny_model):
    """The <<expr= hook runs inside transformers' generate: a calculator model stays exact."""
    m, _, used = load_generator(str(tiny_model), "auto", OPTS, "float32", "cpu", calculator=True)
    assert used == "hf" and not getattr(m, "is_llamacpp", False)


def test_llamacpp_with_the_calculator_is_refused(tiny_model):
    with pytest.raises(ZephyrError, match="--no-calculator"):
        load_generator(str(tiny_model), "llamacpp", OPTS, "float32", "cpu", calculator=True)


def test_auto_takes_hf_on_a_gpu(tiny_model, monkeypatch):
    """The llama.cpp wheel here is CPU-only: with a GPU, auto keeps the transformers path."""
    import zephyr.device as device

    monkeypatch.setattr(device, "pick", lambda name="auto": "cuda")
    monkeypatch.setattr(device, "place", lambda model, name="auto": model)
    _, _, used = load_generator(str(tiny_model), "auto", OPTS, "float32", "auto", calculator=False)
    assert used == "hf"
