"""The `data` pipeline stage: the recipe's `data:` section -> sft/pref/mcqa train+val JSONL,
synth_test.jsonl and manifest.json in ctx.out_dir (see docs/ARCHITECTURE.md).

Run: `zephyr pipeline RECIPE --stages data   (or: zephyr data build RECIPE --out DIR)`.
"""

from __future__ import annotations

from pathlib import Path

from zephyr.data import mcqa_sft
from zephyr.data.build import build, input_files, parse_config
from zephyr.io import sha256_file, sha256_json
from zephyr.recipe import StageContext

CODE = Path(__file__).resolve().parent  # the data package: its code shapes the outputs too


def run(ctx: StageContext) -> None:
    cfg = parse_config(ctx.section)
    seed = ctx.recipe.seed if cfg.seed is None else cfg.seed
    build(cfg, ctx.data_root, ctx.out_dir, seed, ctx.console)


def fingerprint(ctx: StageContext) -> str:
    """A hash of every input file the recipe reads and of the data-stage code (incl. the generator),
    so a changed file or generator rebuilds the data instead of reusing a stale directory."""
    cfg = parse_config(ctx.section)
    root = ctx.data_root
    files = {
        str(p.relative_to(root) if p.is_relative_to(root) else p): sha256_file(p)
        for p in input_files(cfg, root)
    }
    code = {str(p.relative_to(CODE)): sha256_file(p) for p in sorted(CODE.rglob("*.py"))}
    if any(s.source == mcqa_sft.SOURCE for s in cfg.sft):  # the MCQA prompt shapes those rows
        code[mcqa_sft.MCQA_CODE] = sha256_file(CODE.parent.parent / mcqa_sft.MCQA_CODE)
    return sha256_json({"files": files, "code": code})
