"""The `quantize` stage of `zephyr pipeline`: quantize the most-trained model with each method of
the recipe, into `<out_dir>/<method>/`, then (optionally) compare them all in `compare.json`.

Run: `zephyr pipeline RECIPE --stages quantize   (one model: zephyr quantize MODEL ...)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from zephyr import provenance
from zephyr.chat_template import recipe_template
from zephyr.config import from_dict
from zephyr.io import write_json
from zephyr.quantize.compare import CompareConfig, compare_models, print_table
from zephyr.quantize.settings import QuantizeConfig, QuantizeOptions, config_for, options_of
from zephyr.recipe import StageContext

SOURCES = ("dpo", "kto", "sft")  # the most-trained upstream model wins


@dataclass
class QuantizeSection(QuantizeOptions):
    """The recipe's `quantize:` section: the method options (zephyr.quantize.settings; here
    `calib` is relative to the recipe and `lora_base` defaults to the recipe's model), plus:"""

    # METHOD[-gN][-emb][-lora] labels (zephyr.quantize.settings.config_for): gN overrides
    # group_size, -emb adds the int8 embedding, -lora quantizes lora_base and keeps the
    # fine-tuning as bf16 low-rank factors on top, e.g. [int8, int8-emb, awq-g32, int4-g32-lora]
    methods: list[str] = field(default_factory=lambda: ["int8", "int8-emb", "int4"])
    source: str | None = None  # sft | dpo | kto | a model spec; default: the most-trained model
    compare: bool = True
    ppl_tokens: int = 4096
    gen_runs: int = 1
    eval_limit: int = 0


def source_model(ctx: StageContext, sec: QuantizeSection) -> str:
    if sec.source in SOURCES and sec.source in ctx.inputs:
        return str(ctx.inputs[sec.source] / "model")
    if sec.source:
        return str(ctx.path(sec.source)) if Path(ctx.path(sec.source)).exists() else sec.source
    for name in SOURCES:
        if name in ctx.inputs:
            return str(ctx.inputs[name] / "model")
    return ctx.recipe.model


@recipe_template
def run(ctx: StageContext) -> None:
    # imported here (torch): the pipeline types QuantizeSection when a recipe loads
    from zephyr.quantize.methods import quantize

    sec = from_dict(QuantizeSection, ctx.section, "quantize")
    src = source_model(ctx, sec)
    ctx.console.print(f"quantizing {src} with {', '.join(sec.methods)}")
    artifacts = {}
    options = options_of(sec) | {
        "calib": str(ctx.path(sec.calib)) if sec.calib else None,
        "lora_base": sec.lora_base or ctx.recipe.model,
    }
    base = QuantizeConfig(**options, seed=ctx.recipe.seed)
    cfgs = {label: config_for(label, base) for label in sec.methods}  # bad labels fail first
    for label, cfg in cfgs.items():
        out = ctx.out_dir / label
        if not (out / "quantization.json").exists():  # a rerun after a crash keeps finished ones
            quantize(src, out, cfg, data_root=ctx.data_root, console=ctx.console)
        artifacts[label] = str(out)
    if sec.compare:
        cfg = CompareConfig(
            ppl_tokens=sec.ppl_tokens,
            gen_runs=sec.gen_runs,
            eval_limit=sec.eval_limit,
            seed=ctx.recipe.seed,
            device=getattr(ctx.recipe, "device", "auto"),  # auto: the CPU, as the artifacts
        )
        report = compare_models(
            src, artifacts, ctx.out_dir / "compare.json", cfg, ctx.data_root, ctx.console
        )
        print_table(report, ctx.console)
    write_json(
        ctx.out_dir / "quantize.json",
        provenance.record(dataclasses.asdict(sec), source=src, artifacts=artifacts),
    )
