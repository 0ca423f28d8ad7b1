"""CLI commands of the quantize stage: `zephyr quantize MODEL --method M --out DIR [...]`.

The defaults come from zephyr.quantize.settings (QuantizeOptions) and CompareConfig, so the
command, the recipe section and the library cannot drift apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zephyr.quantize.compare import CompareConfig
from zephyr.quantize.settings import METHOD_HELP, QLORA, QuantizeConfig, QuantizeOptions
from zephyr.recipe import DEFAULT_DATA_ROOT

OPTIONS, COMPARE = QuantizeOptions(), CompareConfig()
LORA_BASE_HELP = (
    "Quantize this base instead and keep MODEL's fine-tuning (MODEL - base) as bf16 low-rank "
    "factors on top (label suffix -lora)"
)
ALSO_HELP = (
    "--compare: more METHOD[-gN][-emb][-lora] labels quantized beside OUT and compared in the "
    "same table, e.g. int8,int8-emb (-lora needs --lora-base)"
)


def quantize(
    model: Annotated[
        str,
        typer.Argument(help="Model spec: smollm2-135m, an HF dir, an adapter dir (merged first)"),
    ],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "int8",
    out: Annotated[Path, typer.Option(help="Artifact directory to write")] = Path("quantized"),
    group_size: Annotated[int, typer.Option(help="int4 group size (32, 64, 128)")] = (
        OPTIONS.group_size
    ),
    quantize_embedding: Annotated[
        bool, typer.Option(help="Also store the embedding / tied lm_head as int8")
    ] = OPTIONS.quantize_embedding,
    skip_indivisible: Annotated[
        bool, typer.Option(help="Keep layers the group size does not divide unquantized (recorded)")
    ] = OPTIONS.skip_indivisible,
    calib: Annotated[
        str | None,
        typer.Option(help="gptq/qlora: calibration JSONL or text (default: gsm8k train)"),
    ] = OPTIONS.calib,
    calib_samples: Annotated[int, typer.Option(help="gptq: number of calibration windows")] = (
        OPTIONS.calib_samples
    ),
    steps: Annotated[int, typer.Option(help="easyquant: gradient steps after the range search")] = (
        OPTIONS.steps
    ),
    train_steps: Annotated[int, typer.Option(help="qlora: training steps")] = 20,
    lora_base: Annotated[str | None, typer.Option(help=LORA_BASE_HELP)] = OPTIONS.lora_base,
    n_sigma: Annotated[
        float, typer.Option(help="easyquant: outlier threshold (std devs of the row)")
    ] = OPTIONS.n_sigma,
    data_root: Annotated[Path, typer.Option(help=f"Folder laid out like {DEFAULT_DATA_ROOT}")] = (
        Path(DEFAULT_DATA_ROOT)
    ),
    compare: Annotated[
        bool,
        typer.Option(help="Then compare the artifact against fp32 and bf16 (writes compare.json)"),
    ] = False,
    ppl_tokens: Annotated[int, typer.Option(help="--compare: WikiText-2 test tokens scored")] = (
        COMPARE.ppl_tokens
    ),
    compare_also: Annotated[str, typer.Option(help=ALSO_HELP)] = "",
    gen_runs: Annotated[int, typer.Option(help="--compare: generation runs (median)")] = (
        COMPARE.gen_runs
    ),
    eval_limit: Annotated[
        int, typer.Option(help="--compare: items per accuracy task (0: skip the tasks)")
    ] = COMPARE.eval_limit,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    device: Annotated[
        str, typer.Option(help="--compare: auto|cpu|cuda|mps (auto: CPU, as the artifacts)")
    ] = COMPARE.device,
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
