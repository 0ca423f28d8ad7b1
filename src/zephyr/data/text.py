"""The text of a canonical row: what cleaning, decontamination and the blocklist look at."""

from __future__ import annotations

import re

META = ("id", "source", "family", "subject", "error", "answer")
WORD = re.compile(r"\w+")  # letters, digits, _; punctuation and case are dropped


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in ("role",) for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def row_fields(row: dict) -> list[str]:
    """Every text field of a row: question, choices, prompt turns, replies..."""
    return [s for k, v in row.items() if k not in META for s in strings(v)]


def row_text(row: dict) -> str:
    return "\n".join(row_fields(row))


def target_text(row: dict) -> str:
    """The text a model is trained to produce: assistant turns, `output`, `chosen`."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"] if m.get("role") == "assistant")
    return row.get("output") or row.get("chosen") or ""


def words(text: str) -> list[str]:
    """Lowercased words without punctuation: the same normalisation on both sides of a comparison."""
    return WORD.findall(text.lower())


def question_key(row: dict) -> str:
    """The normalised question of a row (SFT instruction, last prompt turn, MCQA question)."""
    if "messages" in row:
        q = next((m["content"] for m in reversed(row["messages"]) if m["role"] == "user"), "")
    elif "prompt" in row:
        p = row["prompt"]
        q = (
            p
            if isinstance(p, str)
            else next((m["content"] for m in reversed(p) if m["role"] == "user"), "")
        )
    else:
        q = row.get("instruction") or row.get("question") or ""
    return " ".join(words(q))
