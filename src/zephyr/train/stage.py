"""Pipeline stages `sft`, `dpo`, `kto`: recipe section -> typed config -> trainer.

DPO/KTO start from the SFT stage's merged model when the recipe has an sft stage (`from: auto`,
the default), or from the base model (`from: base`); `from: sft` insists on the SFT model.
A stage re-entered after a crash finds its checkpoints in its own directory and resumes.
Reads the data stage's sft_*.jsonl / pref_*.jsonl; writes adapter/, model/, metrics.jsonl,
checkpoints/, plots/ and train.json into its directory.

Run: `zephyr pipeline RECIPE --stages data,sft,dpo   (or: zephyr train sft|dpo|kto ...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zephyr.chat_template import recipe_template
from zephyr.config import from_dict
from zephyr.errors import ZephyrError
from zephyr.train.config import PrefConfig, SFTConfig


def section(cls, raw: dict, where: str):
    raw = dict(raw or {})  # YAML's `1e-3`-as-string: config.from_dict reads it as a float
    if "from" in raw:  # `from` is the natural YAML key but a Python keyword
        raw["start"] = raw.pop("from")
    return from_dict(cls, raw, where)


def _seed(ctx, cfg) -> int:
    return cfg.seed if cfg.seed is not None else ctx.recipe.seed


def _device(ctx) -> str:
    return getattr(ctx.recipe, "device", "auto")  # recipe `device:` (zephyr.device)


def _data(ctx) -> Path:
    if "data" not in ctx.inputs:
        raise ZephyrError(
            f"stage '{ctx.name}' needs the data stage; add `data` before it in the recipe's stages"
        )
    return ctx.inputs["data"]


def start_model(ctx, cfg: PrefConfig) -> str:
    """The model a preference stage starts from (and whose frozen copy is the reference)."""
    has_sft = "sft" in ctx.inputs
    if cfg.start == "sft" and not has_sft:
        raise ZephyrError(
            f"{ctx.name}.from is 'sft' but the recipe has no sft stage; add it or use from: base"
        )
    if cfg.start == "sft" or (cfg.start == "auto" and has_sft):
        return str(ctx.inputs["sft"] / "model")
    return ctx.recipe.model


def _train(ctx, train: Callable[..., dict], cfg: SFTConfig | PrefConfig, model: str) -> None:
    """The tail every training stage shares: its data, out dir, seed, console and device."""
    train(cfg, model, _data(ctx), ctx.out_dir, _seed(ctx, cfg), ctx.console, device=_device(ctx))


@recipe_template
def run_sft(ctx) -> None:
    from zephyr.train.sft import train_sft

    cfg = section(SFTConfig, ctx.section, "sft")
    _train(ctx, train_sft, cfg, ctx.recipe.model)


@recipe_template
def run_dpo(ctx) -> None:
    from zephyr.train.pref import train_pref

    cfg = section(PrefConfig, ctx.section, "dpo")
    if cfg.loss == "kto":
        raise ZephyrError(
            "dpo.loss is 'kto'; KTO is its own stage: add `kto` to stages and a `kto:` section"
        )
    _train(ctx, train_pref, cfg, start_model(ctx, cfg))


@recipe_template
def run_kto(ctx) -> None:
    from zephyr.train.pref import train_pref

    raw = dict(ctx.section or {})
    if raw.setdefault("loss", "kto") != "kto":
        raise ZephyrError(
            f"kto.loss is '{raw['loss']}'; the kto stage only trains KTO (use the dpo stage for sigmoid/ipo)"
        )
    cfg = section(PrefConfig, raw, "kto")
    _train(ctx, train_pref, cfg, start_model(ctx, cfg))
