"""HQQ (Badri & Shaji 2023): data-free int4 whose zero points are fitted by a half-quadratic
solver to minimise an lp (p<1) weight error; torchao ships the solver, we keep its codes."""

from __future__ import annotations

import torch

from zephyr.quantize.qweight import MID, Int4Weight


def int4(w: torch.Tensor, group_size: int) -> Int4Weight:
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_affine_hqq

    n, k = w.shape
    q, s, z, _ = _choose_qparams_and_quantize_affine_hqq(
        w.float(),
        nbits=4,
        group_size=group_size,
        axis=1,
        compute_dtype=torch.float32,
        device="cpu",
        raw_output=True,
    )
    # hqq dequantizes as (q - z) * s; the value at code 8 is (8 - z) * s
    s, z = s.reshape(n, k // group_size).float(), z.reshape(n, k // group_size).float()
    return Int4Weight(q.reshape(n, k).to(torch.uint8), s, (MID - z) * s, group_size)
