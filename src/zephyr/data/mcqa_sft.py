"""The `mcqa` SFT source: this build's MCQA rows as SFT rows that teach the letter-answer skill.

Each row is prompted exactly as the tutor's MCQA mode and the `mcqa_letter` eval task prompt it
(`zephyr.tutor.mcqa.mcq_messages`: the lettered question, then the instruction to answer with the
letter alone); the assistant turn is the gold letter alone. MCQA train rows become SFT train rows
and MCQA validation rows SFT validation rows, so no validation question is ever trained on.
"""

from __future__ import annotations

from zephyr.data.schema import LETTERS, row_id

SOURCE = "mcqa"
MCQA_CODE = "zephyr/tutor/mcqa.py"  # where the prompt lives: part of the data stage's key


def sft_row(row: dict) -> dict:
    """One canonical MCQA row -> an SFT `messages` row (id derived from the MCQA row's id)."""
    from zephyr.tutor.mcqa import mcq_messages

    messages = mcq_messages(row["question"], list(row["choices"]))
    messages.append({"role": "assistant", "content": LETTERS[int(row["answer"])]})
    return {"id": row_id(SOURCE, row["id"]), "messages": messages, "subject": row.get("subject")}


def sft_rows(train: list[dict], val: list[dict]) -> tuple[list[dict], set[str]]:
    """Every MCQA row of the build as SFT rows, and the ids of those that must go to validation."""
    val_rows = [sft_row(r) for r in val]
    return [sft_row(r) for r in train] + val_rows, {r["id"] for r in val_rows}
