"""Calibration text for the calibrated methods (gptq, qlora): the project's own STEM data."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from zephyr.errors import ZephyrError
from zephyr.recipe import DEFAULT_DATA_ROOT

DEFAULT = "gsm8k/train.jsonl"  # worked math solutions: the tutor's domain, disjoint from WikiText


def row_text(row: dict, tok: Any) -> str:
    """One training row as text: chat rows through the template, others field by field."""
    if "messages" in row:
        return tok.apply_chat_template(row["messages"], tokenize=False)
    if "instruction" in row:
        return "\n".join(str(row[k]) for k in ("instruction", "input", "output") if row.get(k))
    if "question" in row and "answer" in row:
        return f"{row['question']}\n{row['answer']}"
    if "text" in row:
        return str(row["text"])
    raise ZephyrError(
        f"calibration row has none of messages/instruction/question/text (keys: {sorted(row)[:6]})"
    )


def load_texts(path: Path, tok: Any) -> list[str]:
    if not path.exists():
        raise ZephyrError(
            f"calibration file not found: {path}; pass --calib FILE (JSONL rows or plain text)"
        )
    if path.suffix == ".jsonl":
        return [
            row_text(json.loads(line), tok)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    return [path.read_text(encoding="utf-8")]


def calibration_ids(tok: Any, cfg: Any, data_root: Path | None) -> torch.Tensor:
    """`cfg.calib_samples` random windows of `cfg.calib_seqlen` tokens (seeded) -> [n, seqlen]."""
    path = Path(cfg.calib) if cfg.calib else Path(data_root or DEFAULT_DATA_ROOT) / DEFAULT
    texts = load_texts(path, tok)
    random.Random(cfg.seed).shuffle(texts)
    ids: list[int] = []
    need = cfg.calib_samples * cfg.calib_seqlen
    for text in texts:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        if len(ids) >= need:
            break
    n = len(ids) // cfg.calib_seqlen
    if n == 0:
        raise ZephyrError(
            f"{path} holds fewer than {cfg.calib_seqlen} tokens; pass a larger --calib file"
        )
    return torch.tensor(ids[: n * cfg.calib_seqlen]).reshape(n, cfg.calib_seqlen)[
        : cfg.calib_samples
    ]
