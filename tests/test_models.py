from pathlib import Path

import pytest

from zephyr.errors import ZephyrError
from zephyr.models import fix_pad_token, load_model, load_tokenizer, resolve


def test_tiny_model_loads_with_pad_distinct_from_eos(tiny_model):
    model, tok = load_model(tiny_model)
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.chat_template, "the chat template must survive conversion"
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_embedded_tokenizer_pad_is_a_real_token():
    tok = load_tokenizer("smollm2-135m")
    assert tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>"


def test_fix_pad_token_replaces_pad_equal_to_eos(tiny_model):
    tok = load_tokenizer(tiny_model)
    tok.pad_token = tok.eos_token
    assert fix_pad_token(tok).pad_token_id != tok.eos_token_id


def test_bf16_load(tiny_model):
    import torch

    model, _ = load_model(tiny_model, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("no/such/path/anywhere", "not found"),
        ("definitely-not-a-model", "not found"),
    ],
)
def test_bad_specs_name_the_input(spec, fragment):
    with pytest.raises(ZephyrError, match=fragment):
        resolve(spec)


def test_hub_id_offline_error_is_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZephyrError, match="local model directory"):
        load_model("someone/some-model-that-is-not-cached")


def test_dir_without_config_is_rejected(tmp_path: Path):
    with pytest.raises(ZephyrError, match="config.json"):
        resolve(tmp_path)


def test_unknown_dtype(tiny_model):
    with pytest.raises(ZephyrError, match="dtype"):
        load_model(tiny_model, dtype="float8")
