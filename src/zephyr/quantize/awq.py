"""AWQ (Lin et al. 2024): activation-aware int4. Input channels that carry large activations are
scaled up before quantization (w * s) and the inputs scaled down (x / s), so their weights lose
less to rounding; s = mean|x|^alpha per input channel, alpha searched per linear to minimise the
output error on calibration activations.

Written here: on this CPU AutoAWQ needs triton/IPEX, GPTQModel's CPU AWQ took 30 min and wrote a
broken model, and llm-compressor pins transformers <= 5.17. Instead of folding 1/s into the
previous norm, 1/s rides along as torchao's `act_pre_scale` (one multiply per linear at runtime).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zephyr.quantize.qweight import Int4Weight, rtn_int4

GRID = 11  # alpha in 0, 0.1, ..., 1.0 (alpha = 0 is plain RTN, so AWQ never does worse on X)


def collect(
    model,
    targets: dict[str, torch.nn.Linear],
    calib: torch.Tensor,
    rows: int = 1024,
    batch_size: int = 4,
):
    """Per target: mean |x| per input channel and a sample of input rows (fp model, one pass)."""
    gen = torch.Generator().manual_seed(0)
    absmean = {n: torch.zeros(m.in_features) for n, m in targets.items()}
    count = dict.fromkeys(targets, 0)
    sample: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    per_batch = max(1, rows // max(1, (len(calib) + batch_size - 1) // batch_size))

    def hook(name):
        def fn(mod, args, _out):
            x = args[0].reshape(-1, mod.in_features).float()
            absmean[name] += x.abs().sum(0)
            count[name] += x.shape[0]
            sample[name].append(x[torch.randperm(x.shape[0], generator=gen)[:per_batch]])

        return fn

    hooks = [m.register_forward_hook(hook(n)) for n, m in targets.items()]
    with torch.no_grad():
        for b in range(0, len(calib), batch_size):
            model(calib[b : b + batch_size], use_cache=False)
    for h in hooks:
        h.remove()
    return {n: (absmean[n] / count[n], torch.cat(sample[n])) for n in targets}


def quantize_weight(
    w: torch.Tensor, absmean: torch.Tensor, x: torch.Tensor, group_size: int
) -> Int4Weight:
    w = w.float()
    ref = x @ w.T
    best, best_err = None, float("inf")
    for alpha in torch.linspace(0, 1, GRID).tolist():
        s = absmean.clamp(min=1e-5).pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # keep the scales centred around 1
        q = rtn_int4(w * s, group_size)
        q.act_scale = 1 / s
        err = float((ref - x @ q.dequantize().T).pow(2).mean())
        if err < best_err:
            best, best_err = q, err
    return best


def quantize_model(
    model,
    targets: dict[str, torch.nn.Linear],
    calib: torch.Tensor,
    group_size: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Int4Weight]:
    stats = collect(model, targets, calib)
    out = {}
    for name, mod in targets.items():
        absmean, x = stats.pop(name)
        out[name] = quantize_weight(mod.weight.detach(), absmean, x, group_size)
        if progress:
            progress(name)
    return out
