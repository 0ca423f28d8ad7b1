"""The three canonical record kinds every stage reads, and how each becomes chat messages.

JSONL rows, one per line, all with `id` (stable hash) and `source` (the recipe's source name):
- SFT:        {"instruction", "input", "output", "system"?}  or  {"messages": [{"role","content"},...]}
- preference: {"prompt": str | [messages], "chosen": str, "rejected": str}
- MCQA:       {"question", "choices": [str, ...], "answer": int (index), "subject": str}
The synthetic held-out test rows are SFT rows plus {"family", "answer_text"}: the gold final answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import string

KINDS = ("sft", "pref", "mcqa")  # the record kinds, in the order outputs and manifests list them
LETTERS = string.ascii_uppercase

# Worked solutions (synthetic data, tutor answers) end with a line "Answer: <value>".
ANSWER_RE = re.compile(r"Answer:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def row_id(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sft_messages(row: dict) -> list[dict]:
    """An SFT row as chat messages (system?, user, assistant)."""
    if "messages" in row:
        return list(row["messages"])
    user = row["instruction"].strip()
    if row.get("input", "").strip():
        user = f"{user}\n\n{row['input'].strip()}"
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return messages + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": row["output"]},
    ]


def prompt_messages(row: dict) -> list[dict]:
    """The prompt of a preference row as chat messages (a plain string is one user turn)."""
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def render_mc(question: str, choices: list[str]) -> str:
    """The question with lettered choices, as the tutor's MCQA mode shows it."""
    lines = [question.strip(), ""] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def extract_answer(text: str) -> str | None:
    """The value after the last 'Answer:' line, or None."""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def normalize_answer(ans: str) -> str:
    """Compare answers loosely: case, spaces, thousands separators, trailing period, '+' signs."""
    ans = ans.strip().rstrip(".").lower().replace(",", "")
    ans = re.sub(r"\s+", " ", ans)
    ans = re.sub(r"(?<=\d)\s+(?=[a-z%°])", " ", ans)

    # numbers: 2.50 == 2.5, 3.0 == 3
    def _num(m: re.Match) -> str:
        try:
            v = float(m.group(0))
        except ValueError:
            return m.group(0)
        return f"{v:.10g}"

    return re.sub(r"-?\d+(?:\.\d+)?", _num, ans)


def answers_match(pred_text: str, gold: str) -> bool:
    """Exact match of the extracted final answer against the gold answer, after normalisation."""
    pred = extract_answer(pred_text)
    return pred is not None and normalize_answer(pred) == normalize_answer(gold)
