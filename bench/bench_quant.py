"""Quantize one model with several methods and compare them against its fp32 and bf16 forms.

    .venv/bin/python bench/bench_quant.py --model smollm2-135m --out runs/bench-quant/m0
    .venv/bin/python bench/bench_quant.py --model runs/demo/sft-*/model --out runs/bench-quant/m1
    .venv/bin/python bench/bench_quant.py --perturb --out runs/bench-quant/m0p   # M0 off its grid
    .venv/bin/python bench/bench_quant.py --model runs/demo/dpo-*/model --lora-base smollm2-135m \
        --perturb --methods int4-g32,int4-g32-lora --out runs/bench-quant/m2p   # M2 on a base off-grid

`--perturb` answers "what if the base were not on a 4-bit grid": M0 was unpacked from a Q4_1
GGUF, so its linear weights sit on a 4-bit grid (blocks of 32) and int4 g32 is trivially lossless
on it; adding uniform noise of one grid step to every linear weight moves them off that grid. With
`--lora-base`, the same noise goes into the base and the model, so the fine-tuning (model - base)
is unchanged and `-lora` labels quantize the perturbed base.
Every number is measured in a fresh process per model; the last line holds ratios to fp32
measured in the same run (the machine is shared, absolute timings are noisy).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console

from zephyr.quantize.compare import CompareConfig, compare_models, print_table
from zephyr.quantize.methods import QuantizeConfig, config_for, quantize


def perturb(spec: str, out: Path, like: str | None = None, seed: int = 0) -> Path:
    """`spec` with each decoder linear weight dithered by U(-step/2, step/2) of the Q4_1 block grid
    of `like` (default: of itself); the same seed gives the same noise for a model and its base."""
    from zephyr.models import load_model

    if (out / "config.json").exists():
        return out
    model, tok = load_model(spec)
    grid = load_model(like)[0] if like else model
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in name:
                g = grid.get_submodule(name).weight.reshape(mod.weight.shape[0], -1, 32)
                step = (g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15
                noise = (torch.rand(g.shape, generator=gen) - 0.5) * step
                mod.weight += noise.reshape(mod.weight.shape)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--perturb", action="store_true")
    ap.add_argument("--methods", default="int8,int8-emb,int4,int4-g32,hqq,easyquant,gptq")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--lora-base", help="-lora labels: the model the fine-tuning started from")
    ap.add_argument("--ppl-tokens", type=int, default=16384)
    ap.add_argument("--eval-limit", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--quantize-only", action="store_true", help="write the artifacts, no compare")
    args = ap.parse_args()
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    src, base = args.model, args.lora_base
    if args.perturb:
        src = str(perturb(args.model, args.out / "source", like=base))
        base = str(perturb(base, args.out / "base")) if base else None
    artifacts, seconds = {}, {}
    for label in args.methods.split(","):
        # METHOD[-gN][-emb][-lora]: e.g. int4-g32, int8-emb, gptq-g32-emb, int4-g32-lora
        cfg = config_for(label, QuantizeConfig(group_size=args.group_size, lora_base=base))
        path = args.out / label
        if not (path / "quantization.json").exists():
            t0 = time.time()
            quantize(src, path, cfg, data_root=args.data_root, console=console)
            seconds[label] = time.time() - t0
        artifacts[label] = str(path)
    if args.quantize_only:
        print(" ".join(f"quantize_s_{k}={v:.1f}" for k, v in seconds.items()))
        return
    note = (
        "perturbed off the Q4_1 grid (as if the base were not 4-bit already)"
        if args.perturb
        else ""
    )
    cfg = CompareConfig(ppl_tokens=args.ppl_tokens, eval_limit=args.eval_limit)
    report = compare_models(
        src, artifacts, args.out / "compare.json", cfg, args.data_root, console, note
    )
    print_table(report, console)
    rows = report["models"]
    pairs = [f"quantize_s_{k}={v:.1f}" for k, v in seconds.items()]
    for k, r in rows.items():
        pairs += [
            f"{k}_size={r['size_x_fp32']:.3f}",
            f"{k}_ppl={r['ppl_x_fp32']:.4f}",
            f"{k}_speed={r['speed_x_fp32']:.2f}",
        ]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
