"""Audit log (SQLite WAL, PII redacted) and the review loop's export to preference pairs."""

from __future__ import annotations

import json
import sqlite3

import pytest

from zephyr.errors import ZephyrError
from zephyr.tutor.audit import Audit
from zephyr.tutor.review import export_pairs, preference_pairs


def _fill(audit: Audit) -> list[int]:
    ids = [
        audit.log(
            "m",
            "chat",
            [{"role": "user", "content": "My email is ann@example.org; what is 3*4?"}],
            "7. Call 555-123-4567",
            prompt_tokens=12,
            completion_tokens=5,
            latency_ms=3.0,
        ),
        audit.log(
            "m",
            "chat",
            [{"role": "user", "content": "What is 2+2?"}],
            "4",
            prompt_tokens=9,
            completion_tokens=1,
        ),
        audit.log(
            "m",
            "chat",
            [{"role": "user", "content": "build a pipe bomb"}],
            "refused",
            status="refused",
            flags=[{"rule": "weapons", "where": "input"}],
        ),
    ]
    return ids


def test_wal_rows_and_redaction(tmp_path):
    audit = Audit(tmp_path / "a.sqlite")
    ids = _fill(audit)
    assert audit.count() == 3 and ids == [1, 2, 3]
    raw = sqlite3.connect(tmp_path / "a.sqlite")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    dump = "\n".join(str(r) for r in raw.execute("SELECT * FROM entries"))
    assert "ann@example.org" not in dump and "555-123-4567" not in dump
    e = audit.get(1)
    assert "<EMAIL>" in e["prompt"][0]["content"] and "<PHONE>" in e["response"]
    assert e["pii"] == {"EMAIL": 1, "PHONE": 1}
    assert e["prompt_tokens"] == 12 and e["completion_tokens"] == 5 and e["time"].endswith("Z")
    assert [r["id"] for r in audit.rows(rule="weapons")] == [3]
    assert [r["id"] for r in audit.rows(search="2+2")] == [2]
    assert [r["id"] for r in audit.rows(status="refused")] == [3]


def test_review_and_export_feed_the_data_stage(tmp_path):
    audit = Audit(tmp_path / "a.sqlite")
    _fill(audit)
    audit.set_review(2, "approved")
    audit.set_review(1, "flagged", correction="3*4 = 12. Answer: 12", note="wrong product")
    audit.set_review(3, "flagged")  # flagged without a correction: nothing to learn from
    assert [r["id"] for r in audit.rows(review="flagged")] == [3, 1]
    assert audit.rows(review="approved")[0]["reviewed_at"]
    with pytest.raises(ZephyrError, match="no audit entry with id 99"):
        audit.set_review(99, "approved")
    with pytest.raises(ZephyrError, match="review state 'bad'"):
        audit.set_review(1, "bad")

    pairs = preference_pairs(audit)
    assert len(pairs) == 1
    assert pairs[0]["chosen"] == "3*4 = 12. Answer: 12" and pairs[0]["rejected"].startswith("7.")
    assert pairs[0]["prompt"][0]["role"] == "user" and "<EMAIL>" in pairs[0]["prompt"][0]["content"]
    out = tmp_path / "review_pairs.jsonl"
    assert export_pairs(audit, out) == 1
    row = json.loads(out.read_text().splitlines()[0])
    assert row["source"] == "tutor_review" and len(row["id"]) == 16

    # The data stage's generic reader takes the file as preference data, unchanged.
    from zephyr.data.config import Source
    from zephyr.data.readers import generic
    from zephyr.data.stats import Stats

    spec = Source(source="file", path=str(out))
    rows = list(generic.rows(spec, [out], Stats("review", "pref"), "pref"))
    assert (
        len(rows) == 1 and rows[0]["chosen"] == row["chosen"] and rows[0]["prompt"] == row["prompt"]
    )
