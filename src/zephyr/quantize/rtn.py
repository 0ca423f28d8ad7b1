"""Round-to-nearest weight-only quantization: int8 per row, int4 per group (torchao grids)."""

from __future__ import annotations

import torch

from zephyr.quantize.qweight import Int4Weight, Int8Weight, int8_per_row, rtn_int4


def int8(w: torch.Tensor) -> Int8Weight:
    """torchao Int8WeightOnly: symmetric, one scale per output row."""
    return int8_per_row(w)


def int4(w: torch.Tensor, group_size: int) -> Int4Weight:
    """torchao's tinygemm min/max grid, one (scale, zero) per group of input columns."""
    return rtn_int4(w, group_size)
