"""One entry point for every method: load the unquantized model (adapters merged first), quantize
each decoder linear, optionally the embedding, and save an artifact `load_model` accepts.

With `lora_base` (label variant `-lora`) the *base* model's linears are quantized instead and the
fine-tuning, W_model - W_base, is kept beside them as bf16 low-rank factors applied at runtime
(QLoRA-style inference). Why: a LoRA delta is far smaller than a 4-bit step, so merging it and then
rounding can round the fine-tuning away (docs/quantization.md measures this on the demo's M2)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from zephyr import provenance
from zephyr.errors import ZephyrError
from zephyr.io import sha256_file, sha256_json
from zephyr.quantize.settings import (  # noqa: F401 (config_for, label_of re-exported)
    METHODS,
    RUNTIME_DTYPE,
    QuantizeConfig,
    check_config,
    config_for,
    label_of,
)


def source_hash(path: str | Path) -> str:
    """sha256 over a model dir's weight and adapter files (and its base's, for an adapter)."""
    p = Path(path)
    files = sorted(
        f
        for f in p.glob("*")
        if f.suffix in (".safetensors", ".bin") or f.name == "adapter_config.json"
    )
    hashes = {f.name: sha256_file(f) for f in files}
    if (p / "adapter_config.json").exists():
        from zephyr.models import _adapter_base, resolve

        hashes["base"] = source_hash(resolve(_adapter_base(p)))
    return sha256_json(hashes)


def targets_of(model: Any) -> dict[str, torch.nn.Linear]:
    """Every nn.Linear inside the decoder layers, whatever the architecture names them (Bloom's
    fused query_key_value included); the LM head goes with the embedding option."""
    from zephyr.arch import decoder_linears

    return decoder_linears(model)


def split_divisible(targets: dict, cfg: QuantizeConfig, console: Console) -> dict[str, str]:
    """Layers the group size does not divide: a clear error, or skipped and said (never silently)."""
    if METHODS[cfg.method] != 4:
        return {}
    bad = {n: m.in_features for n, m in targets.items() if m.in_features % cfg.group_size}
    if not bad:
        return {}
    name, width = next(iter(bad.items()))
    if not cfg.skip_indivisible:
        ok = [g for g in (32, 64, 128) if all(m.in_features % g == 0 for m in targets.values())]
        raise ZephyrError(
            f"--group-size {cfg.group_size} does not divide the input width of {len(bad)} layers "
            f"(e.g. {name}: {width}); use --group-size {ok[-1] if ok else 32}, or --skip-indivisible "
            "to keep those layers unquantized (recorded in quantization.json)"
        )
    skipped = {
        n: f"in_features {w} not divisible by group size {cfg.group_size}" for n, w in bad.items()
    }
    console.print(
        f"[yellow]warning:[/] {len(skipped)} layers stay unquantized (width not divisible by {cfg.group_size}), e.g. {name}"
    )
    for n in skipped:
        targets.pop(n)
    return skipped


def quantize_weights(
    model: Any, targets: dict, cfg: QuantizeConfig, data_root: Path | None, tok: Any
) -> dict:
    """Run the method over the target linears; returns name -> Int4Weight | Int8Weight."""
    from zephyr.quantize import awq, easyquant, gptq, hqq, rtn

    if cfg.method == "awq":
        from zephyr.quantize.calib import calibration_ids

        ids = calibration_ids(tok, cfg, data_root)
        with Progress() as bar:
            task = bar.add_task("awq", total=len(targets))
            return awq.quantize_model(
                model, targets, ids, cfg.group_size, progress=lambda _: bar.advance(task)
            )
    if cfg.method == "gptq":
        from zephyr.arch import decoder_layers
        from zephyr.quantize.calib import calibration_ids

        ids = calibration_ids(tok, cfg, data_root)
        with Progress() as bar:
            task = bar.add_task("gptq", total=len(decoder_layers(model)))
            return gptq.quantize_model(
                model, targets, ids, cfg.group_size, progress=lambda _: bar.advance(task)
            )
    fn = {
        "int8": lambda w: rtn.int8(w),
        "int4": lambda w: rtn.int4(w, cfg.group_size),
        "hqq": lambda w: hqq.int4(w, cfg.group_size),
        "easyquant": lambda w: easyquant.int4(w, cfg.group_size, cfg.n_sigma, cfg.steps),
    }[cfg.method]
    out = {}
    with Progress() as bar:
        task = bar.add_task(cfg.method, total=len(targets))
        for name, mod in targets.items():
            out[name] = fn(mod.weight.detach().float())
            bar.advance(task)
    return out


def split_base(
    model: Any, targets: dict[str, torch.nn.Linear], cfg: QuantizeConfig
) -> tuple[Any, dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """Load `cfg.lora_base` and factor each target's W_model - W_base into bf16 low-rank (A, B).
    Returns the base model (whose linears get quantized), the factors by layer, and their record."""
    from zephyr.models import load_model, resolve
    from zephyr.quantize.qweight import low_rank, rel_error

    base, _ = load_model(cfg.lora_base, dtype="float32")
    base_targets = targets_of(base)
    factors, num, den, params, w2 = {}, 0.0, 0.0, 0, 0.0
    for name, mod in targets.items():
        ref = base_targets.get(name)
        if ref is None or ref.weight.shape != mod.weight.shape:
            got = None if ref is None else tuple(ref.weight.shape)
            raise ZephyrError(
                f"--lora-base {cfg.lora_base}: layer {name} is {got} there but "
                f"{tuple(mod.weight.shape)} in the model; pass the model it was fine-tuned from"
            )
        delta = mod.weight.detach().float() - ref.weight.detach().float()
        a, b = low_rank(delta, cfg.lora_max_rank, cfg.lora_tol)
        a, b = a.to(torch.bfloat16).contiguous(), b.to(torch.bfloat16).contiguous()
        d2 = float(delta.pow(2).sum())
        num += rel_error(delta, b.float() @ a.float()) * d2 if d2 else 0.0
        den += d2
        w2 += float(mod.weight.detach().float().pow(2).sum())
        params += a.numel() + b.numel()
        factors[name] = (a, b)
    ranks = [a.shape[0] for a, _ in factors.values()]
    record = {
        "base": str(cfg.lora_base),
        "base_sha256": source_hash(resolve(cfg.lora_base)),
        "max_rank": max(ranks, default=0),
        "params": params,
        "delta_rel_residual": num / den if den else 0.0,  # squared, like rel_error
        "delta_rel_norm": den / max(w2, 1e-30),  # ||W - W_base||^2 / ||W||^2
    }
    return base, factors, record


def quantize(
    spec: str,
    out: str | Path,
    cfg: QuantizeConfig,
    data_root: Path | None = None,
    console: Console | None = None,
) -> Path:
    """Quantize model `spec` (HF dir, adapter dir, name) with `cfg` into artifact dir `out`."""
    from zephyr.models import load_model, resolve
    from zephyr.quantize.artifact import save_artifact
    from zephyr.quantize.qweight import int8_per_row, rel_error

    console = console or Console(stderr=True)
    check_config(cfg)
    src = Path(resolve(spec))
    if (src / "quantization.json").exists():
        raise ZephyrError(
            f"{spec} is already quantized; quantize its unquantized source model (adapters are merged into fp weights first)"
        )
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    # an adapter dir is merged into the fp32 base here: never merge into a quantized base
    model, tok = load_model(spec, dtype="float32")
    targets = targets_of(model)
    skipped = split_divisible(targets, cfg, console)
    original = {n: m.weight.detach().float().clone() for n, m in targets.items()}
    if cfg.lora:
        base, lora, lora_meta = split_base(model, targets, cfg)
        base_targets = {n: m for n, m in targets_of(base).items() if n in targets}
        weights = quantize_weights(base, base_targets, cfg, data_root, tok)
        del base
    else:
        lora, lora_meta = {}, None
        weights = quantize_weights(model, targets, cfg, data_root, tok)
    bits = METHODS[cfg.method]
    layers, num, den, n_out = {}, 0.0, 0.0, 0
    for name, w in weights.items():
        w0 = original[name]
        w_hat = w.dequantize()
        if name in lora:  # the error of what runs: quantized base + the kept delta
            a, b = lora[name]
            w_hat = w_hat + b.float() @ a.float()
        err = rel_error(w0, w_hat)
        num, den = num + err * float(w0.pow(2).sum()), den + float(w0.pow(2).sum())
        outliers = 0 if getattr(w, "outlier_idx", None) is None else int(w.outlier_idx.numel())
        n_out += outliers
        layers[name] = {
            "bits": bits,
            "group_size": cfg.group_size if bits == 4 else None,
            "rel_error": err,
            "outliers": outliers,
        }
        if name in lora:
            layers[name]["lora_rank"] = int(lora[name][0].shape[0])
    embedding = None
    emb_error = None
    if cfg.quantize_embedding:
        e = model.get_input_embeddings().weight.detach().float()
        embedding = int8_per_row(e)
        emb_error = rel_error(e, embedding.dequantize())
    n_weights = sum(w.numel() for w in original.values())
    meta = {
        "method": cfg.method,
        "bits": bits,
        "group_size": cfg.group_size if bits == 4 else None,
        "dtype": RUNTIME_DTYPE[bits],
        "layers": layers,
        "skipped": skipped,
        "embedding": "int8" if embedding is not None else None,
        "embedding_rel_error": emb_error,
        "weight_rel_error": num / max(den, 1e-30),
        "outlier_fraction": n_out / max(n_weights, 1),
        "source": {"spec": str(spec), "path": str(src), "sha256": source_hash(src)},
        "lora": lora_meta,
        "seconds": round(time.time() - t0, 2),
        "provenance": provenance.record(dataclasses.asdict(cfg), inputs=[]),
    }
    factors = {}
    for name, (a, b) in lora.items():
        if a.shape[0]:  # rank 0: this layer was not fine-tuned
            factors |= {f"{name}.lora_A": a, f"{name}.lora_B": b}
    path = save_artifact(model, tok, weights, embedding, meta, Path(out), extra=factors)
    console.print(
        f"{cfg.method}: {len(layers)} linears quantized, {len(skipped)} skipped, weight error "
        f"{meta['weight_rel_error']:.2e}, {meta['seconds']:.1f}s -> {path}"
    )
    return path
