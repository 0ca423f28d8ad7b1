"""Human review of the audit log, and its export as preference pairs for the next DPO round.

A teacher lists and filters entries, approves or flags them, and attaches a corrected answer.
Flagged entries with a correction become {"prompt", "chosen": correction, "rejected": model
answer} rows in the canonical preference schema, which the data stage reads as generic JSONL.
"""

from __future__ import annotations

from pathlib import Path

from zephyr.data.schema import row_id
from zephyr.io import write_jsonl
from zephyr.tutor.audit import Audit

SOURCE = "tutor_review"


def preference_pairs(audit: Audit) -> list[dict]:
    """Flagged-and-corrected entries as preference rows, oldest first (stable ids)."""
    rows = []
    for e in reversed(audit.rows(review="flagged", corrected=True)):
        if not e["correction"].strip() or e["correction"].strip() == e["response"].strip():
            continue  # no preference to learn from
        prompt = [m for m in e["prompt"] if m.get("role") in ("system", "user", "assistant")]
        rows.append(
            {
                "id": row_id(SOURCE, e["id"], e["correction"]),
                "source": SOURCE,
                "prompt": prompt,
                "chosen": e["correction"],
                "rejected": e["response"],
                "audit_id": e["id"],
                "model": e["model"],
            }
        )
    return rows


def export_pairs(audit: Audit, out: str | Path) -> int:
    """Write the preference pairs to `out` (JSONL, atomically); returns how many."""
    return write_jsonl(out, preference_pairs(audit))


def summary_line(e: dict, width: int = 60) -> list[str]:
    """One table row: id, time, endpoint, status, review, flags, prompt and response (shortened)."""
    last_user = next((m["content"] for m in reversed(e["prompt"]) if m.get("role") == "user"), "")

    def short(s: str) -> str:
        s = " ".join(str(s).split())
        return s if len(s) <= width else s[: width - 1] + "…"

    flags = ",".join(f["rule"] for f in e["flags"]) or "-"
    fixed = "yes" if e["correction"] else "-"
    return [
        str(e["id"]),
        e["time"][5:16].replace("T", " "),  # MM-DD HH:MM (UTC)
        e["endpoint"],
        e["status"],
        e["review"],
        flags,
        fixed,
        short(last_user),
        short(e["response"]),
    ]
