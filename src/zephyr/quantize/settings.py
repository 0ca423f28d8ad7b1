"""The quantize settings, listed once: the method names and the options that `zephyr quantize`,
the recipe's `quantize:` section and QuantizeConfig share (defaults included), and how a method
label (`int4-g32-emb`) maps to a config. No torch here: the pipeline types the recipe section
when a recipe loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zephyr.errors import ZephyrError

# method -> bits; every 4-bit method lands in the same int4 runtime format
METHODS: dict[str, int] = {"int8": 8, "int4": 4, "hqq": 4, "easyquant": 4, "gptq": 4, "awq": 4}
RUNTIME_DTYPE = {8: "float32", 4: "bfloat16"}  # torchao's CPU int4 kernel takes bf16 activations
QLORA = "qlora"  # not a rounding method: trains a LoRA adapter on a 4-bit base (quantize.qlora)
METHOD_HELP = " | ".join([*METHODS, QLORA])


@dataclass
class QuantizeOptions:
    """The options of the methods, the same in the CLI, the recipe section and QuantizeConfig."""

    group_size: int = 64  # int4 methods; 576 (SmolLM2 hidden) is not a multiple of 128
    quantize_embedding: bool = False  # int8 rows for the embedding and the tied lm_head
    skip_indivisible: bool = False  # leave layers whose width the group size does not divide
    n_sigma: float = 3.0  # easyquant: outlier threshold in standard deviations of the row
    steps: int = 0  # easyquant: gradient steps after the range search (the paper's optimiser)
    calib: str | None = None  # gptq/awq: a JSONL/text file (default: gsm8k train under data_root)
    calib_samples: int = 32
    lora_base: str | None = None  # the model the fine-tuning started from (e.g. smollm2-135m)


@dataclass
class QuantizeConfig(QuantizeOptions):
    method: str = "int8"
    calib_seqlen: int = 512
    lora: bool = False  # keep W - W_base unmerged as low-rank bf16 factors over the quantized base
    lora_max_rank: int = 64
    lora_tol: float = 1e-3  # relative residual of the delta's low-rank factorisation
    seed: int = 0


def options_of(obj: Any) -> dict[str, Any]:
    """The QuantizeOptions fields of `obj` (a recipe section, a config) by name."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(QuantizeOptions)}


def config_for(label: str, base: QuantizeConfig | None = None) -> QuantizeConfig:
    """A method label as the stage, the bench and `--compare-also` write it -> its config:
    `METHOD[-gN][-emb][-lora]`, e.g. `int8-emb` (int8 + int8 embedding), `gptq-g32-emb`, or
    `int4-g32-lora` (base quantized, fine-tuning kept as bf16 low-rank factors; needs lora_base)."""
    method, *variants = label.split("-")
    cfg = dataclasses.replace(base or QuantizeConfig(), method=method)
    for v in variants:
        if v == "emb":
            cfg.quantize_embedding = True
        elif v == "lora":
            cfg.lora = True
        elif v.startswith("g") and v[1:].isdigit():
            cfg.group_size = int(v[1:])
        else:
            raise ZephyrError(
                f"method label '{label}': unknown variant '{v}'; write METHOD[-gN][-emb][-lora], e.g. int4-g32-emb"
            )
    check_config(cfg)
    return cfg


def label_of(cfg: QuantizeConfig) -> str:
    """The inverse of config_for: int8, int4-g32, easyquant-g64-emb-lora, ..."""
    label = cfg.method if METHODS.get(cfg.method) != 4 else f"{cfg.method}-g{cfg.group_size}"
    return label + ("-emb" if cfg.quantize_embedding else "") + ("-lora" if cfg.lora else "")


def check_config(cfg: QuantizeConfig) -> None:
    if cfg.lora and not cfg.lora_base:
        raise ZephyrError(
            "the -lora variant keeps the fine-tuning over a quantized base: name that base with "
            "--lora-base (e.g. --lora-base smollm2-135m), or the recipe's quantize.lora_base"
        )
    if cfg.method not in METHODS:
        raise ZephyrError(
            f"unknown quantization method '{cfg.method}'; choose one of {', '.join(METHODS)} (or {QLORA} for training)"
        )
    if METHODS[cfg.method] == 4:
        from zephyr.quantize.qweight import INT4_GROUP_SIZES  # torch: only for the int4 methods

        if cfg.group_size not in INT4_GROUP_SIZES:
            raise ZephyrError(
                f"--group-size {cfg.group_size} is not supported by the CPU int4 kernel; use one of {', '.join(map(str, INT4_GROUP_SIZES))}"
            )
