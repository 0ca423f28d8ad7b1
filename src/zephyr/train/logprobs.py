"""LoRA log-probs: the trainable policy (base model + PEFT LoRA) and the one forward every loss uses.

`TokenLogps` returns the log-prob of each target token only: the LM head runs on the positions
that predict a target (assistant tokens, completions), never on prompt or padding positions.
On a 49k vocabulary the head is ~20% of the FLOPs of a 135M model, so this is a real saving.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zephyr.arch import decoder_and_head, logit_softcap
from zephyr.train.config import LoraSection


def bf16_supported(cpuinfo: str | None = None) -> bool:
    """The CPU's bf16 check (kept for callers; devices are decided in zephyr.device).
    `cpuinfo`: the text of /proc/cpuinfo (read when None; tests pass a fake one)."""
    from zephyr.device import cpu_bf16

    return cpu_bf16(cpuinfo)


def autocast(enabled: Any) -> Any:
    """`enabled`: a zephyr.device.Precision, or a bool (True: CPU bf16 autocast)."""
    from zephyr.device import Precision

    if isinstance(enabled, Precision):
        return enabled.autocast()
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def add_lora(model: Any, cfg: LoraSection, checkpointing: bool = False) -> Any:
    """PEFT LoRA on `cfg.targets`; with `checkpointing`, each decoder layer's activations are
    recomputed in the backward instead of stored (non-reentrant: works with a frozen input,
    autocast, 4D masks and LoRA dropout, whose RNG state checkpoint replays)."""
    from peft import LoraConfig, get_peft_model

    targets = _lora_targets(model, cfg.targets)
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    lm = get_peft_model(model, config)
    if checkpointing:
        base = lm.get_base_model()
        # transformers 5 renamed it; gradient_checkpointing_enable is the deprecated alias
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    return lm


def _lora_targets(model: Any, targets: str | list[str]) -> str | list[str]:
    """`all-linear` (PEFT: every decoder linear, never the LM head) or the named modules present."""
    from zephyr.errors import ZephyrError

    if isinstance(targets, str):
        if targets != "all-linear":
            raise ZephyrError(
                f"lora.targets is '{targets}'; use all-linear or a list of module names like [q_proj, v_proj]"
            )
        return targets
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [t for t in targets if t in present]
    if not found:
        raise ZephyrError(
            f"lora.targets {targets} match no module of this model; use all-linear or name its linear layers"
        )
    return found


HEAD_CHUNK = 512  # target rows per LM-head chunk: 512 x 49152 fp32 logits = 100 MB alive at once


class _TargetLogps(torch.autograd.Function):
    """log p(tgt | h) for rows of `hidden`, the LM head applied `chunk` rows at a time.

    Plain autograd would keep every chunk's [rows x vocab] logits (bf16 and fp32 copies, the
    log-softmax output) alive until the backward: on DPO batches that is most of a GB. Here the
    gradient w.r.t. h, d log p / dh = W[tgt] - softmax(hW^T) W, is formed chunk by chunk in the
    forward (the same two matmuls autograd would run, none recomputed) and only that [rows x hidden]
    tensor is kept. The head weight is frozen (tied embedding, never a LoRA target), so it gets none.
    """

    @staticmethod
    def forward(ctx, hidden, weight, tgt, chunk: int):  # type: ignore[override]
        need, w = ctx.needs_input_grad[0], None
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty(
            hidden.shape if need else (0,), dtype=torch.float32, device=hidden.device
        )
        for s in range(0, hidden.shape[0], chunk):
            h, t = hidden[s : s + chunk], tgt[s : s + chunk]
            logits = F.linear(h, weight)  # autocast (if on) makes this the bf16 matmul
            logp = torch.log_softmax(logits.float(), dim=-1)
            out[s : s + chunk] = logp.gather(1, t[:, None])[:, 0]
            if need:
                w = weight.to(logits.dtype) if w is None else w  # a copy only if autocast casts
                prob = logp.exp_().to(logits.dtype)
                del logits, logp
                grad[s : s + chunk] = w[t].float() - (prob @ w).float()
        ctx.hidden_dtype = hidden.dtype
        if need:
            ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (g[:, None] * grad).to(ctx.hidden_dtype), None, None, None


def target_logps(hidden: torch.Tensor, head: nn.Module, tgt: torch.Tensor) -> torch.Tensor:
    """log p(tgt) of each row of `hidden` under the LM head, fp32, chunked (see _TargetLogps)."""
    if head.weight.requires_grad or getattr(head, "bias", None) is not None:
        # a trained or biased head needs the plain path (its weight gradient)
        return -F.cross_entropy(head(hidden).float(), tgt, reduction="none")
    return _TargetLogps.apply(hidden, head.weight, tgt, HEAD_CHUNK)


class TokenLogps(nn.Module):
    """forward(batch) -> log p(target) for each target of the batch (flat, fp32)."""

    def __init__(self, lm: Any):
        super().__init__()
        self.lm = lm  # a PeftModel (or a plain causal LM for reference-only use)

    def forward(self, input_ids, attention_mask, position_ids, src, tgt) -> torch.Tensor:
        decoder, head = decoder_and_head(self.lm)
        # ALiBi models (Bloom) take no position ids: their batches come without packing
        pos = {"position_ids": position_ids} if position_ids is not None else {}
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **pos
        ).last_hidden_state
        picked = hidden.reshape(-1, hidden.shape[-1])[src]
        softcap = logit_softcap(self.lm)
        if softcap:  # Gemma 2: logits = c * tanh(logits / c), on the plain path
            logits = torch.tanh(head(picked).float() / softcap) * softcap
            return -F.cross_entropy(logits, tgt, reduction="none")
        return target_logps(picked, head, tgt)


def seq_logps(net: nn.Module, batch: dict) -> torch.Tensor:
    """Sum of target log-probs per segment (sequence or completion)."""
    tok = net(
        batch["input_ids"],
        batch["attention_mask"],
        batch["position_ids"],
        batch["src"],
        batch["tgt"],
    )
    out = torch.zeros(batch["n_seg"], dtype=tok.dtype, device=tok.device)
    return out.index_add(0, batch["seg"], tok)


def seg_counts(batch: dict) -> torch.Tensor:
    return torch.bincount(batch["seg"], minlength=batch["n_seg"]).float()
