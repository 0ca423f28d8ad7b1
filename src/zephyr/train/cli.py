"""`zephyr train sft|dpo|kto`: from a recipe (runs the pipeline up to that stage, resuming a crashed
run), or from options (`--data DIR --out DIR`, section keys as `--set key=value`).

    zephyr train sft recipes/demo.yaml
    zephyr train dpo --data runs/demo/data-xxxx --model runs/demo/sft-xxxx/model --out runs/my-dpo --set beta=0.1
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m zephyr.cli train sft --data D --out O
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _parse_sets(pairs: list[str]) -> dict:
    import yaml

    from zephyr.errors import ZephyrError

    out: dict = {}
    for item in pairs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ZephyrError(
                f"--set {item!r} is not key=value; e.g. --set lr=1e-3 or --set lora.r=16"
            )
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def train_command(
    kind: str,
    recipe: Path | None,
    data: Path | None,
    out: Path | None,
    model: str | None,
    sets: list[str],
    resume: bool,
    force: bool,
    device: str | None = None,
    chat_template: str | None = None,
) -> None:
    from rich.console import Console

    from zephyr.config import load_yaml
    from zephyr.errors import ZephyrError

    console = Console(stderr=True)
    overrides = _parse_sets(sets)
    if recipe is not None and data is None:
        # recipe mode: the pipeline up to this stage (finished stages skipped, a crashed one resumed)
        from zephyr.pipeline import load_recipe, run_pipeline

        r = load_recipe(recipe)
        if kind not in r.stages:
            raise ZephyrError(
                f"{recipe} has no '{kind}' stage in its stages list; add it or pass --data/--out"
            )
        if overrides:
            raise ZephyrError(
                "--set works with --data/--out; in recipe mode edit the recipe's section instead"
            )
        stages = r.stages[: r.stages.index(kind) + 1]
        over = {"stages": stages, "model": model, "device": device, "chat_template": chat_template}
        dirs = run_pipeline(recipe, force=force, overrides=over, console=console)
        console.print(f"{kind}: {dirs[kind]}")
        return
    if data is None or out is None:
        raise ZephyrError("pass a recipe, or both --data DIR (a data stage output) and --out DIR")
    raw = dict((load_yaml(recipe).get(kind) or {}) if recipe else {})
    for k, v in overrides.items():
        raw[k] = (
            {**raw.get(k, {}), **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
        )
    ckpts = out / "checkpoints"
    if force and out.exists():
        from zephyr.rundir import fresh_dir

        fresh_dir(out)  # a fresh run: nothing of the old one (checkpoints, metrics) is kept
    elif ckpts.exists() and any(ckpts.glob("step-*")) and not resume:
        raise ZephyrError(
            f"{out} already holds checkpoints; pass --resume to continue that run or --force to start over"
        )
    from zephyr.chat_template import overriding

    if chat_template is None and recipe:
        chat_template = load_yaml(recipe).get("chat_template")
    with overriding(chat_template):
        _train(kind, raw, recipe, data, out, model, console, device)
    console.print(f"{kind}: {out}")


def _train(
    kind: str, raw: dict, recipe, data: Path, out: Path, model, console, device: str | None
) -> None:
    from zephyr.config import load_yaml
    from zephyr.errors import ZephyrError
    from zephyr.train.stage import section

    seed_default = load_yaml(recipe).get("seed", 0) if recipe else 0
    device = device or ((load_yaml(recipe).get("device") if recipe else None) or "auto")
    spec = model or ((load_yaml(recipe).get("model") if recipe else None) or "smollm2-135m")
    if kind == "sft":
        from zephyr.train.config import SFTConfig
        from zephyr.train.sft import train_sft

        cfg = section(SFTConfig, raw, kind)
        seed = cfg.seed if cfg.seed is not None else seed_default
        train_sft(cfg, spec, data, out, seed, console, device=device)
    else:
        from zephyr.train.config import PrefConfig
        from zephyr.train.pref import train_pref

        if kind == "kto":
            raw.setdefault("loss", "kto")
        cfg = section(PrefConfig, raw, kind)
        if (kind == "kto") != (cfg.loss == "kto"):
            raise ZephyrError(
                f"{kind}.loss is '{cfg.loss}'; use `zephyr train kto` for KTO and `dpo` for sigmoid/ipo"
            )
        seed = cfg.seed if cfg.seed is not None else seed_default
        train_pref(cfg, spec, data, out, seed, console, device=device)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    train = typer.Typer(
        help="Fine-tune with LoRA: sft, dpo (sigmoid/ipo), kto.", no_args_is_help=True
    )

    def make(kind: str, doc: str):
        def command(
            recipe: Annotated[
                Path | None, typer.Argument(help="Recipe YAML (its section is used)")
            ] = None,
            data: Annotated[
                Path | None, typer.Option(help="Data stage output dir (sft_*.jsonl / pref_*.jsonl)")
            ] = None,
            out: Annotated[Path | None, typer.Option(help="Output dir (with --data)")] = None,
            model: Annotated[
                str | None, typer.Option(help="Start model spec (default: the recipe's model)")
            ] = None,
            set_: Annotated[
                list[str] | None, typer.Option("--set", help="Section key=value, repeatable")
            ] = None,
            resume: Annotated[
                bool, typer.Option(help="Continue from the last checkpoint in --out")
            ] = False,
            force: Annotated[
                bool, typer.Option(help="Start over (deletes --out, or reruns the stage)")
            ] = False,
            device: Annotated[
                str | None,
                typer.Option(help="auto|cpu|cuda|mps (default: the recipe's device, else auto)"),
            ] = None,
            chat_template: Annotated[
                str | None,
                typer.Option(
                    help="chatml, a .jinja file or Jinja text (default: the recipe's, else the "
                    "model's own, else ChatML)"
                ),
            ] = None,
        ) -> None:
            train_command(
                kind, recipe, data, out, model, set_ or [], resume, force, device, chat_template
            )

        command.__doc__ = doc
        train.command(kind)(command)

    make("sft", "Supervised fine-tuning with LoRA (assistant-only loss, EOS trained).")
    make("dpo", "DPO (sigmoid) or IPO against the adapter-disabled, cached reference.")
    make("kto", "KTO on unpaired desirable/undesirable completions (micro_batch >= 2).")
    app.add_typer(train, name="train")


def main() -> None:
    """`python -m zephyr.train.cli sft|dpo|kto ...`: the train commands alone (what
    `accelerate launch -m zephyr.train.cli` runs on each process)."""
    import os
    import sys

    from zephyr.errors import exit_on_error
    from zephyr.heap import limit_heap_growth

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    limit_heap_growth()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    with exit_on_error():
        app(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
