"""What Zephyr needs to know about a decoder-only model, found by structure, not by Llama names.

Llama, Qwen2 and Gemma keep their blocks in `model.layers` and their embedding in
`model.embed_tokens`; Bloom has `transformer.h` and `transformer.word_embeddings`, a fused
`query_key_value`, and ALiBi instead of position ids. Every stage asks here instead.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from zephyr.errors import ZephyrError


def _config(model: Any) -> Any:
    config = getattr(model, "config", None)
    return getattr(config, "text_config", None) or config


def decoder_layers(model: Any) -> nn.ModuleList:
    """The list of decoder blocks: the first ModuleList as long as `config.num_hidden_layers`."""
    n = getattr(_config(model), "num_hidden_layers", None)
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise ZephyrError(
        f"{type(model).__name__}: no list of {n} decoder layers found; Zephyr needs a decoder-only "
        "transformers model (LlamaForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM, BloomForCausalLM, ...)"
    )


def decoder_linears(model: Any) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the decoder layers, by full module name (LM head and embeddings excluded)."""
    inside = {id(m) for layer in decoder_layers(model) for m in layer.modules()}
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside}


def module_name(model: Any, module: nn.Module) -> str:
    """The dotted name of `module` inside `model`."""
    for name, mod in model.named_modules():
        if mod is module:
            return name
    raise ZephyrError(f"{type(module).__name__} is not a submodule of {type(model).__name__}")


def embedding_name(model: Any) -> str:
    """`model.embed_tokens` (Llama, Qwen2, Gemma), `transformer.word_embeddings` (Bloom), ..."""
    return module_name(model, model.get_input_embeddings())


def takes_position_ids(model: Any) -> bool:
    """False for ALiBi models (Bloom): packed rows with restarting positions cannot be expressed."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    return "position_ids" in inspect.signature(decoder.forward).parameters


def decoder_and_head(model: Any) -> tuple[Any, nn.Module]:
    """(the decoder stack returning hidden states, the LM head) of a causal LM or PeftModel."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def logit_softcap(model: Any) -> float | None:
    """Gemma 2's final tanh soft-capping of the logits (None for most models, Gemma 3 included)."""
    return getattr(_config(model), "final_logit_softcapping", None) or None
