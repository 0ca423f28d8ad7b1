"""The audit log: every request and response in SQLite (WAL), PII redacted before it is written.

One row per request (chat or MCQA, server or terminal; answered, refused, cancelled or failed):
time, model id, prompt, response, latency, token counts, safety flags, HTTP status of an error,
and the review state a teacher sets with `zephyr review`. WAL lets `zephyr review` read while the
server writes. The database is created 0600 (prompts are students' words).

A write that fails (database locked, disk full) never fails the request: the row goes to a
backlog, is appended to `<db>.fallback.jsonl` (0600, fsynced), and a background thread retries
it. Rows carry a unique `uid`, so the fallback file is imported at the next open without
duplicates; it is removed once every row is in the database.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
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
# Columns added after the first release: older databases get them at open.
MIGRATIONS = {"uid": "TEXT", "http_status": "INTEGER"}
COLUMNS = (
    "uid, time, model, endpoint, prompt, response, status, finish_reason, latency_ms,"
    " prompt_tokens, completion_tokens, flags, pii, http_status"
)
INSERT = f"INSERT OR IGNORE INTO entries ({COLUMNS}) VALUES ({','.join('?' * 14)})"
log = logging.getLogger("zephyr.tutor")

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

    def __init__(self, path: str | Path, busy_timeout_s: float = 2.0, retry_s: float = 1.0):
        self.path = Path(path)
        self.fallback = self.path.with_name(self.path.name + ".fallback.jsonl")
        self.retry_s = retry_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(self.path)  # sqlite gives its -wal and -shm files the same mode
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=busy_timeout_s)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints
            self.db.executescript(SCHEMA)
            _migrate(self.db)
        except sqlite3.DatabaseError as e:
            raise ZephyrError(
                f"{self.path} is not a usable audit database ({e}); pass another --audit path"
            ) from None
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        self.pending: list[tuple] = []  # rows not yet in the database, oldest first
        self.closed = threading.Event()
        self.retrier: threading.Thread | None = None
        self._recover()

    def close(self) -> None:
        self.closed.set()
        if self.retrier is not None:
            self.retrier.join(timeout=5)
        with self.lock:
            self._flush()  # whatever still fails stays in the fallback file for the next open
            self.db.close()

    def backlog(self) -> int:
        """Rows waiting to be written to the database (kept in the fallback file meanwhile)."""
        with self.lock:
            return len(self.pending)

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
        http_status: int | None = None,
    ) -> int | None:
        """Redact and write one request/response; the row id, or None if the write is deferred.

        Never raises on a failed write: the row is kept (memory + fallback file) and retried.
        """
        pii: dict[str, int] = {}
        prompt = [{**m, "content": redact(str(m.get("content", "")), pii)} for m in messages]
        row = (
            uuid.uuid4().hex,
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
            http_status,
        )
        with self.lock:
            retrying = bool(self.pending)  # an outage: leave the database to the retry thread
            self.pending.append(row)
            if not retrying and self._flush():
                found = self.db.execute("SELECT id FROM entries WHERE uid = ?", (row[0],))
                return int(found.fetchone()[0])
            self._spill([row])
            self._start_retrier()
            return None

    def _flush(self) -> bool:
        """Write every pending row in one transaction (lock held); True when none is left."""
        if not self.pending:
            return True
        try:
            with self.db:  # commits, or rolls back on error
                self.db.executemany(INSERT, self.pending)
        except sqlite3.Error as e:
            log.warning("audit write failed (%s); %d rows kept for retry", e, len(self.pending))
            return False
        self.pending.clear()
        self.fallback.unlink(missing_ok=True)
        return True

    def _spill(self, rows: list[tuple]) -> None:
        """Append rows to the fallback file so a crash before the retry loses none."""
        try:
            fd = os.open(self.fallback, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(list(r), ensure_ascii=False) + "\n" for r in rows)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # disk full too: the rows stay in memory, /health shows them
            log.error("audit fallback %s not writable (%s); rows held in memory", self.fallback, e)

    def _recover(self) -> None:
        """Import the rows an earlier run could not write (duplicates are skipped by uid)."""
        if not self.fallback.exists():
            return
        with open(self.fallback, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, list) and len(row) == len(COLUMNS.split(",")):
                    self.pending.append(tuple(row))
                else:  # a torn last line from a crash mid-append
                    log.warning("skipping a torn line in %s", self.fallback)
        with self.lock:
            if not self._flush():
                self._start_retrier()

    def _start_retrier(self) -> None:
        if self.retrier is None or not self.retrier.is_alive():
            self.retrier = threading.Thread(target=self._retry, name="audit-retry", daemon=True)
            self.retrier.start()

    def _retry(self) -> None:
        wait = self.retry_s
        while not self.closed.wait(wait):
            with self.lock:
                if self._flush():
                    return
            wait = min(wait * 2, 30.0)

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


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (before sqlite creates it 0644)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _migrate(db: sqlite3.Connection) -> None:
    have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}
    for name, kind in MIGRATIONS.items():
        if name not in have:
            db.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS entries_uid ON entries(uid)")
    db.commit()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in ("prompt", "flags", "pii"):
        out[key] = json.loads(out[key])
    return out
