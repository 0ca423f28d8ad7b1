"""A Zephyr quantized folder is not a plain HF folder: transformers alone refuses it, naming zephyr."""

from __future__ import annotations

import pytest
import torch

from zephyr.quantize.methods import QuantizeConfig, quantize


def test_plain_from_pretrained_refuses_a_quantized_folder(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from zephyr.models import load_model

    out = quantize(str(tiny_model), tmp_path / "int8", QuantizeConfig(method="int8"))
    with pytest.raises(Exception, match="zephyr"):
        AutoModelForCausalLM.from_pretrained(out)
    # Zephyr's own loader still reads it, and it predicts what the fp32 model predicts
    q, tok = load_model(str(out))
    ref, _ = load_model(str(tiny_model))
    ids = torch.tensor([tok.encode("The sum of 2 and 3 is")])
    with torch.no_grad():
        a, b = q(ids).logits[0, -1], ref(ids).logits[0, -1]
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
