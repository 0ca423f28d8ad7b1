"""The model card (`README.md`) of a trained model directory, as the Hugging Face hub expects one:
YAML metadata (base_model, library, tags), then base model, data (manifest hash, file hashes),
hyperparameters, and the evaluation results known at training time with their protocols.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from zephyr.io import atomic_write, sha256_file

# what each validation metric of metrics.jsonl means (the protocol a reader needs)
PROTOCOLS = {
    "val_loss": "mean negative log-likelihood per target token (SFT: assistant tokens + EOS) or mean "
    "preference loss per pair (DPO/IPO/KTO) on the held-out validation file",
    "reward_acc": "share of held-out pairs whose implicit reward (beta x policy/reference log-ratio) "
    "ranks chosen strictly above rejected (ties count as wrong)",
    "margin": "mean chosen minus rejected implicit reward on the held-out pairs",
    "ties": "share of held-out pairs whose two implicit rewards are equal",
    "chosen_reward": "mean implicit reward (beta x log-ratio to the reference) of chosen answers",
    "rejected_reward": "mean implicit reward (beta x log-ratio to the reference) of rejected answers",
}


def manifest_hash(inputs: list[Path]) -> str | None:
    """sha256 of the data stage's manifest.json beside the training file, if there is one."""
    for p in inputs:
        m = Path(p).parent / "manifest.json"
        if m.is_file():
            return sha256_file(m)
    return None


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def render(cfg: Any, info: dict, inputs: list[Path], library: str) -> str:
    """Markdown with YAML front matter; `info` is train.json (provenance + first/final eval)."""
    kind, base = info.get("kind", "sft"), str(info.get("base", ""))
    files = info.get("inputs") or {}
    lines = [
        "---",
        f"base_model: {base}",
        f"library_name: {library}",
        f"tags: [zephyr, lora, {kind}]",
        "---",
        f"# Zephyr {kind.upper()} model",
        "",
        f"Fine-tuned from `{base}` with LoRA ({kind}) by Zephyr; seed {info.get('seed')}, "
        f"{info.get('world', 1)} process(es), {info.get('precision', 'fp32')}.",
        "",
        "## Data",
        f"- data manifest sha256: `{manifest_hash(inputs) or 'no manifest.json beside the data'}`",
        *(f"- `{Path(p).name}` sha256 `{h}`" for p, h in files.items()),
        f"- rows: {info.get('rows', {})}",
        "",
        "## Hyperparameters",
        *_table(_flat(dataclasses.asdict(cfg))),
        "",
        "## Evaluation",
    ]
    final, first = info.get("final_eval"), info.get("first_eval")
    if not final:
        lines.append("No validation rows: nothing was evaluated during training.")
    else:
        lines += ["| metric | before training | after training | protocol |", "|---|---|---|---|"]
        for k in [k for k in (first or final) if k not in ("step", "lr")]:  # validation keys
            v, before = final.get(k), (first or {}).get(k)
            if not isinstance(v, (int, float)):
                continue
            shown = f"{before:.4f}" if isinstance(before, (int, float)) else ""
            lines.append(
                f"| {k} | {shown} | {v:.4f} | {PROTOCOLS.get(k, 'see docs/training.md')} |"
            )
        lines.append(
            "\nBenchmark results (hellaswag, gsm8k, ...) are in the eval stage's results.json "
            "(`zephyr eval MODEL_DIR`), each with its lm-eval protocol."
        )
    return "\n".join(lines) + "\n"


def _flat(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def write(dest: Path, cfg: Any, info: dict, inputs: list[Path], library: str) -> Path:
    path = Path(dest) / "README.md"
    with atomic_write(path) as f:
        f.write(render(cfg, info, inputs, library))
    return path
