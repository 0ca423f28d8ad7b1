"""Quantize one model with several methods and compare them against its fp32 and bf16 forms.

    .venv/bin/python bench/bench_quant.py --model smollm2-135m --out runs/bench-quant/m0
    .venv/bin/python bench/bench_quant.py --model runs/demo/sft-*/model --out runs/bench-quant/m1
    .venv/bin/python bench/bench_quant.py --perturb --out runs/bench-quant/m0p   # M0 off its grid

`--perturb` stands in for a trained model when none exists yet: M0 was unpacked from a Q4_1 GGUF,
so its linear weights sit on a 4-bit grid (blocks of 32) and int4 g32 is trivially lossless on
it; adding uniform noise of one grid step to every linear weight moves them off that grid.
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


def perturb(spec: str, out: Path, seed: int = 0) -> Path:
    """M0 with each decoder linear weight dithered by U(-step/2, step/2) of its Q4_1 block grid."""
    from zephyr.models import load_model

    if (out / "config.json").exists():
        return out
    model, tok = load_model(spec)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in name:
                w = mod.weight
                g = w.reshape(w.shape[0], -1, 32)
                step = (g.amax(-1, keepdim=True) - g.amin(-1, keepdim=True)) / 15
                g += (torch.rand(g.shape, generator=gen) - 0.5) * step
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
    ap.add_argument("--ppl-tokens", type=int, default=16384)
    ap.add_argument("--eval-limit", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--quantize-only", action="store_true", help="write the artifacts, no compare")
    args = ap.parse_args()
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    src = str(perturb(args.model, args.out / "source")) if args.perturb else args.model
    artifacts, seconds = {}, {}
    for label in args.methods.split(","):
        # METHOD[-gN][-emb]: e.g. int4-g32, int8-emb, gptq-g32-emb
        cfg = config_for(label, QuantizeConfig(group_size=args.group_size))
        path = args.out / label
        if not (path / "quantization.json").exists():
            t0 = time.time()
            quantize(src, path, cfg, data_root=args.data_root, console=console)
            seconds[label] = time.time() - t0
        artifacts[label] = str(path)
    if args.quantize_only:
        print(" ".join(f"quantize_s_{k}={v:.1f}" for k, v in seconds.items()))
        return
    note = "M0 perturbed off its Q4_1 grid (stand-in for a trained model)" if args.perturb else ""
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
