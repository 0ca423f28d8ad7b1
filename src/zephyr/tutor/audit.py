"""The audit log: every request and response in SQLite (WAL), PII redacted before it is written.

One row per answered request (chat or MCQA, server or terminal): time, model id, prompt,
response, latency, token counts, safety flags, and the review state a teacher sets with
`zephyr review`. WAL lets `zephyr review` read while the server writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time TEXT NOT NULL,
  model TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  prompt TEXT NOT NULL,
  response TEXT NOT NULL,
  status TEXT NOT NULL,
  finish_reason TEXT,
  latency_ms REAL,
  prompt_tokens INTEGER,
  completion_tokens INTEGER,
  flags TEXT NOT NULL DEFAULT '[]',
  pii TEXT NOT NULL DEFAULT '{}',
  review TEXT NOT NULL DEFAULT 'pending',
  correction TEXT,
  note TEXT,
  reviewed_at TEXT
);
CREATE INDEX IF NOT EXISTS entries_review ON entries(review);
"""

REVIEW_STATES = ("pending", "approved", "flagged")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def redact(text: str, counts: dict[str, int]) -> str:
    """The data stage's PII redactor; adds what it found to `counts`."""
    from zephyr.data.pii import redact as pii_redact

    clean, found = pii_redact(text)
    for kind, n in found.items():
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return clean


class Audit:
    """An append-mostly SQLite log, safe to share between the server's threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ZephyrError(
                f"{self.path} is not a usable audit database ({e}); pass another --audit path"
            ) from None
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def log(
        self,
        model: str,
        endpoint: str,
        messages: list[dict],
        response: str,
        status: str = "ok",
        finish_reason: str | None = None,
        latency_ms: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        flags: list[dict] | None = None,
    ) -> int:
        """Redact and write one request/response; returns the row id."""
        pii: dict[str, int] = {}
        prompt = [{**m, "content": redact(str(m.get("content", "")), pii)} for m in messages]
        row = (
            _now(),
            model,
            endpoint,
            json.dumps(prompt, ensure_ascii=False),
            redact(response, pii),
            status,
            finish_reason,
            latency_ms,
            prompt_tokens,
            completion_tokens,
            json.dumps(flags or []),
            json.dumps(pii),
        )
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO entries (time, model, endpoint, prompt, response, status, finish_reason,"
                " latency_ms, prompt_tokens, completion_tokens, flags, pii)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            self.db.commit()
            return int(cur.lastrowid)

    def count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def rows(
        self,
        review: str | None = None,
        status: str | None = None,
        rule: str | None = None,
        search: str | None = None,
        corrected: bool | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Entries, newest first, filtered by review state, status, policy rule or text."""
        where, args = [], []
        if review:
            where.append("review = ?")
            args.append(review)
        if status:
            where.append("status = ?")
            args.append(status)
        if rule:
            where.append("flags LIKE ?")
            args.append(f'%"rule": "{rule}"%')
        if search:
            where.append("(prompt LIKE ? OR response LIKE ?)")
            args += [f"%{search}%"] * 2
        if corrected is not None:
            where.append("correction IS NOT NULL" if corrected else "correction IS NULL")
        sql = "SELECT * FROM entries" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self.lock:
            return [_decode(r) for r in self.db.execute(sql, args).fetchall()]

    def get(self, entry_id: int) -> dict:
        with self.lock:
            row = self.db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise ZephyrError(
                f"no audit entry with id {entry_id} in {self.path}; see `zephyr review list`"
            )
        return _decode(row)

    def set_review(
        self,
        entry_id: int,
        review: str | None = None,
        correction: str | None = None,
        note: str | None = None,
    ) -> dict:
        """Approve or flag an entry, attach a corrected answer (redacted too) or a note."""
        if review is not None and review not in REVIEW_STATES:
            raise ZephyrError(
                f"review state '{review}' is unknown; use one of {', '.join(REVIEW_STATES)}"
            )
        self.get(entry_id)
        sets, args = ["reviewed_at = ?"], [_now()]
        if review is not None:
            sets.append("review = ?")
            args.append(review)
        if correction is not None:
            sets.append("correction = ?")
            args.append(redact(correction, {}))
        if note is not None:
            sets.append("note = ?")
            args.append(note)
        with self.lock:
            self.db.execute(f"UPDATE entries SET {', '.join(sets)} WHERE id = ?", (*args, entry_id))
            self.db.commit()
        return self.get(entry_id)


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("prompt", "flags", "pii"):
        out[key] = json.loads(out[key])
    return out
