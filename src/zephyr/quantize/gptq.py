"""GPTQ (Frantar et al. 2022): int4 per group, column by column, each rounding error pushed onto
the columns not yet quantized through the inverse Hessian of the layer inputs (H = 2 X^T X).

Written here (about 80 lines) instead of GPTQModel: that library needs a torchvision stub, a
worker-count env var and a version pin on this CPU and took ~4 min; this runs layer by layer on
calibration text from the project's own data and lands in the same int4 format as every method.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zephyr.arch import decoder_layers
from zephyr.quantize.qweight import MID, Int4Weight


def quantize_weight(
    w: torch.Tensor, h: torch.Tensor, group_size: int, damp: float = 0.01, block: int = 128
) -> Int4Weight:
    """The classic GPTQ loop (asymmetric min/max grid per group, no act-order)."""
    w = w.float().clone()
    n, k = w.shape
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros(n, k, dtype=torch.uint8)
    scale = torch.zeros(n, k // group_size)
    lo = torch.zeros(n, k // group_size)
    block = max(group_size, block // group_size * group_size)  # a block holds whole groups
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:  # grid from the group's current (error-updated) weights
                grp = w1[:, i : i + group_size]
                gi = col // group_size
                lo[:, gi], hi = grp.amin(1), grp.amax(1)
                scale[:, gi] = ((hi - lo[:, gi]) / 15).clamp(min=1e-8)
            s, m = scale[:, col // group_size], lo[:, col // group_size]
            qc = torch.round((w1[:, i] - m) / s).clamp(0, 15)
            q[:, col] = qc.to(torch.uint8)
            err = (w1[:, i] - (qc * s + m)) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return Int4Weight(q, scale, lo + MID * scale, group_size)


def quantize_model(
    model,
    targets: dict[str, torch.nn.Linear],
    calib: torch.Tensor,
    group_size: int,
    batch_size: int = 4,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Int4Weight]:
    """Layer by layer: capture each decoder layer's inputs, build the Hessians of its linears,
    quantize them, then run the layer again (now quantized) to feed the next one."""
    layers = decoder_layers(model)
    caught: list[tuple[torch.Tensor, dict]] = []
    # each layer's own keyword inputs: Gemma's sliding and full layers differ in mask and rotary
    kwargs_of: list[list[dict]] = [[] for _ in layers]

    def catch(i):
        def hook(_mod, args, kwargs):
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if i == 0:
                caught.append((hidden, {}))
            kwargs_of[i].append(kwargs)

        return hook

    handles = [
        m.register_forward_pre_hook(catch(i), with_kwargs=True) for i, m in enumerate(layers)
    ]
    with torch.no_grad():
        for b in range(0, len(calib), batch_size):
            model(calib[b : b + batch_size], use_cache=False)
    for h in handles:
        h.remove()
    names = {mod: name for name, mod in targets.items()}
    out: dict[str, Int4Weight] = {}
    for li, layer in enumerate(layers):
        mine = [m for m in layer.modules() if m in names]
        hess = {m: torch.zeros(m.in_features, m.in_features) for m in mine}
        count = {m: 0 for m in mine}

        def accumulate(mod, args, _out, hess=hess, count=count):
            x = args[0].reshape(-1, mod.in_features).float()
            t = x.shape[0]
            hess[mod] *= count[mod] / (count[mod] + t)
            count[mod] += t
            x = x * (2 / count[mod]) ** 0.5
            hess[mod] += x.T @ x

        hooks = [m.register_forward_hook(accumulate) for m in mine]
        caught = [(hidden, kw) for (hidden, _), kw in zip(caught, kwargs_of[li], strict=True)]
        with torch.no_grad():
            for hidden, kwargs in caught:
                layer(hidden, **kwargs)
        for h in hooks:
            h.remove()
        for m in mine:
            qw = quantize_weight(m.weight.data, hess[m], group_size)
            out[names[m]] = qw
            m.weight.data = qw.dequantize().to(m.weight.dtype)
        with torch.no_grad():  # the next layer sees this layer's quantized output
            nxt = []
            for hidden, kwargs in caught:
                y = layer(hidden, **kwargs)
                nxt.append((y[0] if isinstance(y, tuple) else y, kwargs))
            caught = nxt
        if progress:
            progress(f"layer {li + 1}/{len(layers)}")
    return out
