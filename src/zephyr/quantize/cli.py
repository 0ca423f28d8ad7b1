"""CLI commands of the quantize stage: `zephyr quantize MODEL --method M --out DIR [...]`.

The defaults come from zephyr.quantize.settings (QuantizeOptions) and CompareConfig, so the
command, the recipe section and the library cannot drift apart; HELP holds the help texts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from zephyr.quantize.compare import CompareConfig
from zephyr.quantize.settings import METHOD_HELP, QLORA, QuantizeConfig, QuantizeOptions
from zephyr.recipe import DEFAULT_DATA_ROOT

OPTIONS, COMPARE = QuantizeOptions(), CompareConfig()
HELP = {
    "method": METHOD_HELP,
    "out": "Artifact directory to write",
    "group_size": "int4 group size (32, 64, 128)",
    "quantize_embedding": "Also store the embedding / tied lm_head as int8",
    "skip_indivisible": "Keep layers the group size does not divide unquantized (recorded)",
    "calib": "gptq/qlora: calibration JSONL or text (default: gsm8k train)",
    "calib_samples": "gptq: number of calibration windows",
    "steps": "easyquant: gradient steps after the range search",
    "train_steps": "qlora: training steps",
    "lora_base": "Quantize this base instead and keep MODEL's fine-tuning (MODEL - base) as bf16 "
    "low-rank factors on top (label suffix -lora)",
    "n_sigma": "easyquant: outlier threshold (std devs of the row)",
    "data_root": f"Folder laid out like {DEFAULT_DATA_ROOT}",
    "compare": "Then compare the artifact against fp32 and bf16 (writes compare.json)",
    "ppl_tokens": "--compare: WikiText-2 test tokens scored",
    "compare_also": "--compare: more METHOD[-gN][-emb][-lora] labels quantized beside OUT and "
    "compared in the same table, e.g. int8,int8-emb (-lora needs --lora-base)",
    "gen_runs": "--compare: generation runs (median)",
    "eval_limit": "--compare: items per accuracy task (0: skip the tasks)",
    "seed": "Random seed",
    "device": "--compare: auto|cpu|cuda|mps (auto: CPU, as the artifacts)",
}


def opt(name: str) -> Any:
    """The typer option for parameter `name`, with its help text from HELP."""
    return typer.Option(help=HELP[name])


def quantize(
    model: Annotated[
        str,
        typer.Argument(help="Model spec: smollm2-135m, an HF dir, an adapter dir (merged first)"),
    ],
    method: Annotated[str, opt("method")] = "int8",
    out: Annotated[Path, opt("out")] = Path("quantized"),
    group_size: Annotated[int, opt("group_size")] = OPTIONS.group_size,
    quantize_embedding: Annotated[bool, opt("quantize_embedding")] = OPTIONS.quantize_embedding,
    skip_indivisible: Annotated[bool, opt("skip_indivisible")] = OPTIONS.skip_indivisible,
    calib: Annotated[str | None, opt("calib")] = OPTIONS.calib,
    calib_samples: Annotated[int, opt("calib_samples")] = OPTIONS.calib_samples,
    steps: Annotated[int, opt("steps")] = OPTIONS.steps,
    train_steps: Annotated[int, opt("train_steps")] = 20,
    lora_base: Annotated[str | None, opt("lora_base")] = OPTIONS.lora_base,
    n_sigma: Annotated[float, opt("n_sigma")] = OPTIONS.n_sigma,
    data_root: Annotated[Path, opt("data_root")] = Path(DEFAULT_DATA_ROOT),
    compare: Annotated[bool, opt("compare")] = False,
    ppl_tokens: Annotated[int, opt("ppl_tokens")] = COMPARE.ppl_tokens,
    compare_also: Annotated[str, opt("compare_also")] = "",
    gen_runs: Annotated[int, opt("gen_runs")] = COMPARE.gen_runs,
    eval_limit: Annotated[int, opt("eval_limit")] = COMPARE.eval_limit,
    seed: Annotated[int, opt("seed")] = COMPARE.seed,
    device: Annotated[str, opt("device")] = COMPARE.device,
) -> None:
    """Quantize a model into a reloadable artifact (`zephyr eval/chat/serve` take its directory)."""
    console = Console(stderr=True)
    if method == QLORA:
        from zephyr.quantize.qlora import QLoRAConfig, train

        train(
            model, out, QLoRAConfig(steps=train_steps, calib=calib, seed=seed), data_root, console
        )
        return
    from zephyr.quantize.methods import quantize as run_quantize

    cfg = QuantizeConfig(
        method=method,
        group_size=group_size,
        quantize_embedding=quantize_embedding,
        skip_indivisible=skip_indivisible,
        n_sigma=n_sigma,
        steps=steps,
        calib=calib,
        calib_samples=calib_samples,
        lora=lora_base is not None,
        lora_base=lora_base,
        seed=seed,
    )
    path = run_quantize(model, out, cfg, data_root=data_root, console=console)
    if compare:
        measure = CompareConfig(
            ppl_tokens=ppl_tokens,
            gen_runs=gen_runs,
            eval_limit=eval_limit,
            seed=seed,
            device=device,
        )
        compare_with(model, path, cfg, compare_also, measure, data_root, console)


def compare_with(
    model: str,
    path: Path,
    cfg: QuantizeConfig,
    also: str,
    measure: CompareConfig,
    data_root: Path,
    console: Console,
) -> None:
    """`--compare`: quantize each `--compare-also` label beside `path` (unless done), then measure
    them all against fp32 and bf16 into path/compare.json and print the table."""
    from zephyr.quantize.compare import compare_models, print_table
    from zephyr.quantize.methods import quantize as run_quantize
    from zephyr.quantize.settings import config_for, label_of

    artifacts = {label_of(cfg): str(path)}
    for extra in filter(None, (x.strip() for x in also.split(","))):
        other = path.parent / f"{path.name}-{extra}"
        if not (other / "quantization.json").exists():
            extra_cfg = config_for(extra, dataclasses.replace(cfg, lora=False))
            run_quantize(model, other, extra_cfg, data_root=data_root, console=console)
        artifacts[extra] = str(other)
    report = compare_models(model, artifacts, path / "compare.json", measure, data_root, console)
    print_table(report, console)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command()(quantize)
