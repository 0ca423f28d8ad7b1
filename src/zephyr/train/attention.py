"""Attention in fp32 inside bf16 autocast training, on CPU.

PyTorch's CPU flash-attention backward is ~3x slower in bf16 than in fp32 (measured on SmolLM2-135M
SFT batches, Xeon with AMX: 22.7 ms vs 7.3 ms per layer call), so under bf16 autocast the model
keeps its bf16 matmuls and runs only attention in fp32: the same SDPA kernel and masks
(transformers' `sdpa`), its q/k/v up-cast and its output cast back. In fp32 training it is not used.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "zephyr_sdpa_fp32"


def _sdpa_fp32(module, query, key, value, attention_mask, **kwargs) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(query.dtype), weights


def use_fp32_attention(model: Any) -> None:
    """Switch a transformers model (sdpa attention) to fp32 SDPA; masks are built as for sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _sdpa_fp32)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
