"""Which engine chat and serve take: llama.cpp on the CPU when it is installed (it runs the
calculator hook too), transformers on a GPU (tutor/cli.py)."""

from __future__ import annotations

from zephyr.tutor.cli import load_generator

OPTS = {"quant": "f16", "parallel": 1, "ctx": 256, "threads": 1}


def test_auto_takes_llamacpp_on_the_cpu(tiny_model):
    m, _, used = load_generator(str(tiny_model), "auto", OPTS, "float32", "cpu")
    assert used == "llamacpp" and getattr(m, "is_llamacpp", False)
    m.close()


def test_hf_when_asked(tiny_model):
    m, _, used = load_generator(str(tiny_model), "hf", OPTS, "float32", "cpu")
    assert used == "hf" and not getattr(m, "is_llamacpp", False)


def test_auto_takes_hf_on_a_gpu(tiny_model, monkeypatch):
    """The llama.cpp wheel here is CPU-only: with a GPU, auto keeps the transformers path."""
    import zephyr.device as device

    monkeypatch.setattr(device, "pick", lambda name="auto": "cuda")
    monkeypatch.setattr(device, "place", lambda model, name="auto": model)
    _, _, used = load_generator(str(tiny_model), "auto", OPTS, "float32", "auto")
    assert used == "hf"
