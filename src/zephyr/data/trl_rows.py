"""Rows as written to the data stage's files: the conversational forms TRL's trainers read.

    SFT:        {"id", "source", "messages": [{"role", "content"}...], ...}
    preference: {"id", "source", "prompt": [messages], "chosen": [assistant message],
                 "rejected": [assistant message], ...}

One type per field in every file (a prompt that is sometimes a string and sometimes a list of
messages cannot be one Arrow column, and TRL decides "conversational" from any one field), so
`datasets.load_dataset("json", ...)`, TRL's SFTTrainer and DPOTrainer take the files as they are.
Zephyr's own readers (schema.sft_messages / prompt_messages / completion_text) take both forms.
"""

from __future__ import annotations

from zephyr.data.schema import prompt_messages, sft_messages

SFT_FIELDS = ("instruction", "input", "output", "system")


def sft_row(row: dict) -> dict:
    rest = {k: v for k, v in row.items() if k not in SFT_FIELDS and k != "messages"}
    return {**rest, "messages": sft_messages(row)}


def _reply(value) -> list[dict]:
    return value if isinstance(value, list) else [{"role": "assistant", "content": value}]


def pref_row(row: dict) -> dict:
    return {
        **row,
        "prompt": prompt_messages(row),
        "chosen": _reply(row["chosen"]),
        "rejected": _reply(row["rejected"]),
    }


def written(kind: str, rows: list[dict]) -> list[dict]:
    """`rows` of `kind` (sft, pref, mcqa) in their on-disk form."""
    if kind == "sft":
        return [sft_row(r) for r in rows]
    if kind == "pref":
        return [pref_row(r) for r in rows]
    return rows
