"""`zephyr study --dry-run`: the plan (variants, their stages, which stage directories are shared)
and a time estimate from the recipe's sizes. The rates are assumptions, printed with the plan:
rough figures for SmolLM2-135M in fp32 on a 2-core CPU (README, The study), scaled per model."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rich.console import Console

from zephyr.data.synth import FAMILIES
from zephyr.pipeline import PlannedStage, Recipe

SFT_TOKENS_PER_S = 125.0  # SFT fwd+bwd, fp32, 2 cores: 110-140 tokens/s for SmolLM2-135M
# bf16 autocast on an AMX Xeon, 1 thread: 197 tokens/s over study.yaml's SmolLM2 SFT stage with its
# validation passes (median step 240), 2026-12-02
SFT_TOKENS_PER_S_BF16 = 200.0
# eval in bf16 vs fp32, same items, same AMX Xeon (2026-12-02): hellaswag 2.7x, arc 2.6x, mmlu
# 2.8x, mcqa_letter 3.0x, gsm8k 2.9x
EVAL_BF16_SPEEDUP = 2.8
# DPO: chosen and rejected per pair (2 sequences), plus the cached reference pass (~1/3 of a step)
DPO_FACTOR = 2 * 4 / 3
# eval seconds per item per model (SmolLM2-135M, HF path, 2 cores; recipes/demo.yaml's figures)
EVAL_S_PER_ITEM = {
    "hellaswag": 1.0,
    "arc_challenge": 0.35,
    "arc_easy": 0.35,
    "mmlu": 0.4,  # 0-shot; k-shot prompts cost (1 + k) / 2 times as much
    "mcqa_letter": 0.4,
    "reward_accuracy": 1.4,  # policy and reference on both answers
    "synthetic": 3.0,
    "bertscore": 3.5,
    "gsm8k": 8.0,  # greedy generation, up to 256 new tokens
    "wikitext": 35.0,
}
DEFAULT_S_PER_ITEM = 2.0
FEWSHOT_DEFAULT = {"mmlu": 5}  # tasks whose default prompt has examples (num_fewshot: null)
GEN_TOKENS = {"gsm8k": 256}  # generation tasks: the figure above at this many new tokens
MODEL_SCALE = {"smollm2-135m": 1.0, "gemma3-270m": 2.0}  # Gemma: 262k-vocab head ~ doubles a token
DATA_STAGE_S = 30.0  # study.yaml's D_S and D_L builds: 7-8 s each (2026-12-02, this CPU)
CHARS_PER_TOKEN = 4.0  # English text and code, SmolLM2's tokenizer (rough)
PAD_FACTOR = 1.3  # a batch is padded to its longest row
LABELS = {"sft": "M1", "dpo": "M2", "kto": "M2-kto"}


def _count(path: Path) -> int | None:
    return sum(1 for _ in path.open(encoding="utf-8")) if path.is_file() else None


def row_tokens(path: Path, sample: int = 2000) -> float | None:
    """Mean tokens per row of a built file, padded like a batch: (JSON line chars / CHARS_PER_TOKEN)
    x PAD_FACTOR. Rough: the line includes keys and escapes, the template adds a few tokens."""
    lengths = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= sample:
                break
            lengths.append(len(line))
    return sum(lengths) / len(lengths) / CHARS_PER_TOKEN * PAD_FACTOR if lengths else None


def rows(recipe: Recipe, kind: str, data: PlannedStage | None) -> tuple[int | None, bool]:
    """Training rows of a kind: counted when the data stage has run, else from the caps (synth
    uncapped: n_per_family x families); None when an uncapped source makes it unknown."""
    if data is not None and (n := _count(data.out_dir / f"{kind}_train.jsonl")) is not None:
        return n, True
    total = 0
    for src in recipe.data.get(kind) or []:
        cap = src.get("cap")
        if src.get("source") == "synth":
            synth = recipe.data.get("synth") or {}
            made = int(synth.get("n_per_family", 200)) * len(synth.get("families") or FAMILIES)
            cap = made if cap is None else min(cap, made)
        if cap is None:
            return None, False
        total += cap
    return int(total * (1 - float(recipe.data.get("val_fraction", 0.05)))), False


def train_seconds(st: PlannedStage, data: PlannedStage | None, tps: float) -> tuple[float, str]:
    sec = st.ctx.section or {}
    kind = "sft" if st.name == "sft" else "pref"
    n, exact = rows(st.ctx.recipe, kind, data)
    if sec.get("max_train"):
        n = int(sec["max_train"]) if n is None else min(n, int(sec["max_train"]))
    if n is None:
        return 0.0, "rows unknown (an uncapped source): not estimated"
    epochs = float(sec.get("epochs", 1.0))
    if sec.get("max_steps"):
        n, epochs = (
            int(sec["max_steps"]) * int(sec.get("micro_batch", 4)) * int(sec.get("grad_accum", 1)),
            1.0,
        )
    seq = int(sec.get("max_seq_len", 512))
    factor = 1.0 if kind == "sft" else DPO_FACTOR
    if exact and (measured := row_tokens(data.out_dir / f"{kind}_train.jsonl")):
        seq = min(seq, round(measured))  # the data is built: its rows' length, not the maximum
        factor = 1.0 if kind == "sft" else DPO_FACTOR / 2  # a pair's line holds both answers
    scale = MODEL_SCALE.get(st.ctx.recipe.model, 1.0)
    if tps == SFT_TOKENS_PER_S and sec.get("bf16") and _bf16(st):
        tps = SFT_TOKENS_PER_S_BF16  # the default rate, and this stage trains in bf16 autocast
    s = n * epochs * seq * factor * scale / tps
    return s, f"{n}{'' if exact else ' (from caps)'} rows x {epochs:g} ep x {seq} tok"


def eval_models(st: PlannedStage) -> list[tuple[str, str]]:
    """(label, identity) of each model the eval stage scores: M0 by base model, others by stage dir."""
    found = [("M0", f"M0:{st.ctx.recipe.model}")]
    for stage, label in LABELS.items():
        if stage in st.ctx.inputs:
            found.append((label, str(st.ctx.inputs[stage])))
    wanted = (st.ctx.section or {}).get("models") or []
    return [m for m in found if not wanted or m[0] in wanted]


def eval_seconds_per_model(st: PlannedStage) -> float:
    sec: dict[str, Any] = st.ctx.section or {}
    limit, limits = sec.get("limit", 50), sec.get("limits") or {}
    total = 0.0
    options = sec.get("options") or {}
    for task in sec.get("tasks") or []:
        n = limits.get(task, limit) or 1000
        s = EVAL_S_PER_ITEM.get(task, DEFAULT_S_PER_ITEM)
        if task in GEN_TOKENS:  # decoding time grows with the tokens generated
            s *= (options.get(task) or {}).get("max_new_tokens", GEN_TOKENS[task]) / GEN_TOKENS[
                task
            ]
        if task in FEWSHOT_DEFAULT:
            k = sec.get("num_fewshot")
            s *= max(1.0, (1 + (FEWSHOT_DEFAULT[task] if k is None else k)) / 2)
        total += n * s
    if _bf16(st, str(sec.get("dtype", "float32"))):
        total /= EVAL_BF16_SPEEDUP
    return total * MODEL_SCALE.get(st.ctx.recipe.model, 1.0)


def _bf16(st: PlannedStage, eval_dtype_name: str | None = None) -> bool:
    """Whether the stage computes in bf16 here: training with `bf16: true`, or eval in
    `bfloat16` / `auto`, on hardware that multiplies bf16 fast (zephyr.device)."""
    from zephyr.device import eval_dtype, pick, precision

    device = getattr(st.ctx.recipe, "device", "auto") or "auto"
    if eval_dtype_name is not None:
        return eval_dtype(eval_dtype_name, device) == "bfloat16"
    return precision(pick(device), True).mixed_precision == "bf16"


def _fmt(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min"


def print_plan(
    base: Recipe,
    variants: list,
    plans: dict[str, list[PlannedStage]],
    console: Console,
    tokens_per_s: float | None = None,
) -> float:
    """Print each variant's stages (runs / shared / done) with estimates; return the total seconds."""
    tps = tokens_per_s or SFT_TOKENS_PER_S
    say = functools.partial(console.print, soft_wrap=True)  # long lines stay whole (copy-paste)
    first: dict[Path, str] = {}  # stage dir -> the variant that runs it
    scored: set[str] = set()  # eval models already counted (shared through the eval cache)
    total = 0.0
    say(f"study '{base.name}': {len(variants)} variants, run directory {base.out}/{base.name}")
    for i, v in enumerate(variants, 1):
        say(f"\n[bold]{i}. {v.name}[/]  (model {v.recipe.model})")
        stages = plans[v.name]
        data = next((s for s in stages if s.name == "data"), None)
        vtotal = 0.0
        for st in stages:
            tag = st.out_dir.name
            if st.finished:
                state, s, why = "done", 0.0, ""
            elif st.out_dir in first:
                state, s, why = f"shared with '{first[st.out_dir]}'", 0.0, ""
            else:
                first[st.out_dir] = v.name
                state, s, why = "runs", *_estimate(st, data, tps, scored)
            vtotal += s
            say(f"   {st.name:9s} {tag:22s} {state:28s} {_fmt(s) if s else '':>8s}  {why}")
        say(f"   variant total ~{_fmt(vtotal)}")
        total += vtotal
    shared = [d for d in first if sum(d in {s.out_dir for s in p} for p in plans.values()) > 1]
    say(f"\nshared stage directories: {', '.join(d.name for d in shared) or 'none'}")
    say(f"estimated total: ~{_fmt(total)}  (+ the report)")
    say(
        f"assumptions: training costs rows x epochs x max_seq_len tokens (an upper bound; once the "
        f"data stage has run, its rows' mean length / {CHARS_PER_TOKEN:g} chars per token x "
        f"{PAD_FACTOR:g} padding instead) at {tps:g} tokens/s (SFT, fp32, 2 cores; "
        f"{SFT_TOKENS_PER_S_BF16:g} in bf16 autocast where the CPU has AMX / AVX512-BF16; DPO x{DPO_FACTOR:.2f}: "
        f"two answers per pair + the cached reference pass); eval seconds per item per model "
        f"{EVAL_S_PER_ITEM} in fp32 (gsm8k at {GEN_TOKENS['gsm8k']} new tokens, scaled by max_new_tokens; / {EVAL_BF16_SPEEDUP:g} in bf16); per-model scale {MODEL_SCALE}; data stage {DATA_STAGE_S:g} s; "
        "each base model's M0 and each shared model are scored once (the run's eval cache)"
    )
    return total


def _estimate(
    st: PlannedStage, data: PlannedStage | None, tps: float, scored: set[str]
) -> tuple[float, str]:
    if st.name == "data":
        return DATA_STAGE_S, "assumed"
    if st.name in LABELS:
        return train_seconds(st, data, tps)
    if st.name == "eval":
        models = eval_models(st)
        eval_key = repr(sorted((st.ctx.section or {}).items()))
        new = [label for label, ident in models if f"{ident}|{eval_key}" not in scored]
        scored.update(f"{ident}|{eval_key}" for _, ident in models)
        s = len(new) * eval_seconds_per_model(st)
        return s, f"{len(new)} of {len(models)} models to score ({', '.join(new) or 'all shared'})"
    return 0.0, "not estimated"
