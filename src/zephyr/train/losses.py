"""Preference losses on sequence log-probs, with TRL's semantics (trl DPOTrainer / KTOTrainer).

All return per-example losses; the loop sums them and divides by the step's global count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Sigmoid DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))


def ipo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    n_chosen: torch.Tensor,
    n_rejected: torch.Tensor,
) -> torch.Tensor:
    """IPO (Eq. 17) on per-token average log-ratios, as TRL computes it: (delta - 1/(2 beta))^2."""
    delta = (chosen - ref_chosen) / n_chosen.clamp(min=1) - (
        rejected - ref_rejected
    ) / n_rejected.clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


def kto_kl(
    policy_kl: torch.Tensor, ref_kl: torch.Tensor, reduce: Callable | None = None
) -> torch.Tensor:
    """KTO's reference point: mean log-ratio on mismatched (prompt, other completion) pairs, >= 0, no grad.
    It needs at least 2 rows per micro-batch: with one row the "mismatched" pair is the row itself.
    `reduce` (accelerate's, with several processes) averages the estimate over every process's
    micro-batch first, as TRL gathers it, so all processes use the same reference point."""
    kl = (policy_kl - ref_kl).mean().detach()
    if reduce is not None:
        kl = reduce(kl, "mean")
    return kl.clamp(min=0)


def kto_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Desirable: w_d (1 - sigmoid(beta (r - KL))); undesirable: w_u (1 - sigmoid(beta (KL - r)))."""
    ratio = logps - ref_logps
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio)))
    return torch.where(desirable, good, bad)
