"""Quantized weights as plain tensors (what goes into safetensors) and their CPU runtime form.

Every int4 method (rtn, hqq, gptq, awq, easyquant) ends in the same record: 4-bit codes `q` in
0..15, and per group of `group_size` input columns a `scale` and a `zero` such that

    w ~= (q - 8) * scale + zero            (the tinygemm convention: `zero` is the value at code 8)

plus, for easyquant, a few outlier weights kept exactly in fp32. On disk the codes are packed two
per byte; at load they become a torchao `Int4OpaqueTensor` (CPU tinygemm kernel, bf16 activations).
int8 is per-output-row symmetric (torchao `Int8Tensor`), and the embedding option stores int8 rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT4_GROUP_SIZES = (32, 64, 128)  # what torchao's CPU int4 kernel accepts
MID = 8  # tinygemm stores the zero as the value at code 8


@dataclass
class Int4Weight:
    q: torch.Tensor  # [N, K] uint8 codes 0..15
    scale: torch.Tensor  # [N, K // g] float
    zero: torch.Tensor  # [N, K // g] float: value at code 8
    group_size: int
    outlier_idx: torch.Tensor | None = None  # [n] int64 flat indices (row * K + col)
    outlier_val: torch.Tensor | None = None  # [n] fp32 original weights, kept exactly
    act_scale: torch.Tensor | None = None  # [K] awq: inputs are multiplied by this first

    def dequantize(self, with_outliers: bool = True) -> torch.Tensor:
        n, k = self.q.shape
        g = self.group_size
        q = self.q.float().reshape(n, k // g, g)
        w = (q - MID) * self.scale.float().unsqueeze(-1) + self.zero.float().unsqueeze(-1)
        w = w.reshape(n, k)
        if self.act_scale is not None:  # y = (x * a) @ W^T: the effective weight is W * a
            w = w * self.act_scale.float()
        if with_outliers and self.outlier_idx is not None:
            w.view(-1)[self.outlier_idx] = self.outlier_val.float()
        return w

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The plain tensors saved for this weight (bf16 scales/zeros: what the kernel uses)."""
        out = {
            f"{prefix}.qweight": pack_int4(self.q),
            f"{prefix}.scales": self.scale.to(torch.bfloat16).contiguous(),
            f"{prefix}.zeros": self.zero.to(torch.bfloat16).contiguous(),
        }
        if self.outlier_idx is not None:
            out[f"{prefix}.outlier_idx"] = self.outlier_idx.to(torch.int32).contiguous()
            out[f"{prefix}.outlier_val"] = self.outlier_val.float().contiguous()
        if self.act_scale is not None:
            out[f"{prefix}.act_scale"] = self.act_scale.float().contiguous()
        return out

    @classmethod
    def from_tensors(cls, sd: dict, prefix: str, group_size: int) -> Int4Weight:
        idx = sd.get(f"{prefix}.outlier_idx")
        return cls(
            q=unpack_int4(sd[f"{prefix}.qweight"]),
            scale=sd[f"{prefix}.scales"],
            zero=sd[f"{prefix}.zeros"],
            group_size=group_size,
            outlier_idx=None if idx is None else idx.long(),
            outlier_val=sd.get(f"{prefix}.outlier_val"),
            act_scale=sd.get(f"{prefix}.act_scale"),
        )

    def runtime(self) -> torch.Tensor:
        """A torchao Int4OpaqueTensor (the CPU tinygemm layout) built from these exact codes."""
        from torchao.prototype.quantization.int4 import Int4OpaqueTensor
        from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

        n, k = self.q.shape
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.q.to(torch.int32), 1)
        scale = self.scale.to(torch.bfloat16).reshape(n, -1)
        zero = self.zero.to(torch.bfloat16).reshape(n, -1)
        sz = pack_tinygemm_scales_and_zeros(scale, zero, torch.bfloat16)
        pre = None if self.act_scale is None else self.act_scale.to(torch.bfloat16)
        return Int4OpaqueTensor(
            packed, sz, [1, self.group_size], torch.Size([n, k]), act_pre_scale=pre
        )


@dataclass
class Int8Weight:
    q: torch.Tensor  # [N, K] int8
    scale: torch.Tensor  # [N, 1] fp32, symmetric per row

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.qweight": self.q.contiguous(),
            f"{prefix}.scale": self.scale.float().contiguous(),
        }

    @classmethod
    def from_tensors(cls, sd: dict, prefix: str) -> Int8Weight:
        return cls(q=sd[f"{prefix}.qweight"], scale=sd[f"{prefix}.scale"])

    def runtime(self, dtype: torch.dtype) -> torch.Tensor:
        """A torchao Int8Tensor (weight-only, per row) over these codes."""
        from torchao.quantization import Int8Tensor

        return Int8Tensor(self.q, self.scale.reshape(-1, 1).float(), [1, self.q.shape[1]], dtype)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K/2] bytes (even column in the low nibble)."""
    q = q.to(torch.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.uint8)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return out


def int4_from_minmax(
    w: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, group_size: int
) -> Int4Weight:
    """Round-to-nearest onto the asymmetric grid spanning [lo, hi] per group ([N, K/g] each)."""
    n, k = w.shape
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    g = w.reshape(n, k // group_size, group_size)
    q = torch.round((g - lo.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp(0, 15)
    return Int4Weight(q.reshape(n, k).to(torch.uint8), scale, lo + MID * scale, group_size)


def rtn_int4(w: torch.Tensor, group_size: int) -> Int4Weight:
    """Plain min/max asymmetric round-to-nearest (torchao's tinygemm choose_qparams, same grid)."""
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    return int4_from_minmax(w.float(), g.amin(-1), g.amax(-1), group_size)


def int8_per_row(w: torch.Tensor) -> Int8Weight:
    """Symmetric per-row int8 through torchao's own quantizer."""
    from torchao.quantization import Int8Tensor
    from torchao.quantization.granularity import PerRow

    t = Int8Tensor.from_hp(w.float(), PerRow())
    return Int8Weight(q=t.qdata.clone(), scale=t.scale.reshape(-1, 1).float().clone())


def rel_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Relative squared reconstruction error ||W - W_hat||^2 / ||W||^2."""
    w = w.float()
    return float((w - w_hat.float()).pow(2).sum() / w.pow(2).sum().clamp(min=1e-30))


class Int8Embedding(torch.nn.Module):
    """Embedding lookup over int8 rows: gathers the rows first, then dequantizes only those."""

    def __init__(
        self,
        weight: Int8Weight,
        dtype: torch.dtype,
        padding_idx: int | None = None,
        embed_scale: float = 1.0,  # Gemma multiplies its embeddings by sqrt(hidden)
    ):
        super().__init__()
        self.register_buffer("qweight", weight.q)
        self.register_buffer("scale", weight.scale.reshape(-1, 1).float())
        self.dtype = dtype
        self.padding_idx = padding_idx
        self.embed_scale = embed_scale
        self.num_embeddings, self.embedding_dim = weight.q.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.qweight[ids].to(self.dtype) * self.scale[ids].to(self.dtype)
        if self.embed_scale != 1.0:  # rounded to the runtime dtype first, as Gemma does
            rows = rows * torch.tensor(self.embed_scale, dtype=self.dtype)
        return rows.to(self.dtype)


def add_outlier_hook(module: torch.nn.Module, w: Int4Weight) -> None:
    """y += x[:, cols] * (w_orig - w_int4) scattered into rows: the outliers stay exact at runtime."""
    n, k = w.q.shape
    idx = w.outlier_idx.long()
    delta = w.outlier_val.float() - w.dequantize(with_outliers=False).reshape(-1)[idx]
    module.register_buffer("outlier_rows", idx // k, persistent=False)
    module.register_buffer("outlier_cols", idx % k, persistent=False)
    module.register_buffer("outlier_delta", delta, persistent=False)

    def hook(mod, args, out):
        x = args[0].reshape(-1, k)
        contrib = x[:, mod.outlier_cols].float() * mod.outlier_delta
        y = out.reshape(-1, n).float().index_add_(1, mod.outlier_rows, contrib)
        return y.to(out.dtype).reshape(out.shape)

    module.register_forward_hook(hook)


def low_rank(delta: torch.Tensor, max_rank: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """delta [out, in] ~ B @ A with the smallest rank whose relative Frobenius residual is <= tol
    (capped at max_rank). A LoRA fine-tune's delta has rank <= the sum of its adapters' ranks, so
    this finds those factors again up to float rounding; for a full fine-tune it is an
    approximation, and the residual is recorded. Returns (A [r, in], B [out, r]) in fp32."""
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    energy = s.pow(2)
    total = float(energy.sum())
    if total == 0.0:
        return delta.new_zeros(0, delta.shape[1]), delta.new_zeros(delta.shape[0], 0)
    # residual after keeping r singular values: sum of the rest, relative to the whole
    rest = (energy.flip(0).cumsum(0).flip(0) / total).sqrt().tolist() + [0.0]
    r = next(i for i, v in enumerate(rest) if v <= tol)
    r = min(r, max_rank)
    root = s[:r].sqrt()  # split sigma evenly: both factors keep a similar scale in bf16
    return root[:, None] * vh[:r], u[:, :r] * root


def add_lora_hook(module: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
    """y += (x @ A^T) @ B^T: the fine-tuning kept as a small unmerged correction over the
    quantized base, so rounding the base to 4 bits does not round the fine-tuning away.
    The factors run in fp32 (stored bf16): at batch 1 a bf16 matmul this small took 68 us on
    this CPU and fp32 with the casts 21 us, over 210 layers per token."""
    module.register_buffer("lora_a", a.float(), persistent=False)
    module.register_buffer("lora_b", b.float(), persistent=False)

    def hook(mod, args, out):
        x = args[0].to(mod.lora_a.dtype)
        return out + torch.nn.functional.linear(
            torch.nn.functional.linear(x, mod.lora_a), mod.lora_b
        ).to(out.dtype)

    module.register_forward_hook(hook)
