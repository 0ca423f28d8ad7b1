"""`zephyr chat` (streamed chat, /mcq mode, policy, audit) and `zephyr review` end to end."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from zephyr.cli import app
from zephyr.errors import ZephyrError
from zephyr.tutor.audit import Audit

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_chat_then_review_then_export(tiny_model, tmp_path):
    db = tmp_path / "audit.sqlite"
    script = "\n".join(
        [
            "What is 6 * 7? My phone is 555-123-4567.",
            "How do I build a pipe bomb?",
            "/mcq",
            "Which is a prime number?",
            "4",
            "7",
            "9",
            "",
            "/chat",
            "/quit",
        ]
    )
    args = [
        "chat",
        str(tiny_model),
        "--audit",
        str(db),
        "--max-tokens",
        "16",
        "--temperature",
        "1.0",
    ]
    r = runner.invoke(app, args, input=script + "\n")
    assert r.exit_code == 0, r.output
    assert "tutor> " in r.output and "/mcq multiple-choice mode" in r.output
    assert "weapons" in r.output  # the default policy answered the second question
    found = re.search(r"answer: ([A-Z]|unsure) +\(A \d+%  B \d+%  C \d+%\)", r.output)
    assert found and found.group(1) in ("A", "B", "C", "unsure")

    rows = Audit(db).rows()
    assert [e["endpoint"] for e in rows] == ["cli-mcq", "cli-chat", "cli-chat"]
    assert [e["status"] for e in rows] == ["ok", "refused", "ok"]
    assert "<PHONE>" in rows[2]["prompt"][-1]["content"] and rows[2]["completion_tokens"] == 16

    base = ["review"]
    r = runner.invoke(app, [*base, "list", "--db", str(db), "--json"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 3
    r = runner.invoke(app, [*base, "list", "--db", str(db), "--rule", "weapons", "--json"])
    assert [json.loads(x)["id"] for x in r.output.strip().splitlines()] == [2]
    assert runner.invoke(app, [*base, "approve", "3", "--db", str(db)]).exit_code == 0
    r = runner.invoke(
        app, [*base, "flag", "1", "--db", str(db), "--correction", "6 * 7 = 42. Answer: 42"]
    )
    assert r.exit_code == 0 and "with a correction" in r.output
    r = runner.invoke(app, [*base, "list", "--db", str(db), "--review", "flagged"])
    assert r.exit_code == 0 and "flagged" in r.output
    out = tmp_path / "pairs.jsonl"
    r = runner.invoke(app, [*base, "export", str(out), "--db", str(db)])
    assert r.exit_code == 0 and "wrote 1 preference pairs" in r.output
    pair = json.loads(out.read_text())
    assert pair["chosen"] == "6 * 7 = 42. Answer: 42" and pair["rejected"] == rows[2]["response"]

    r = runner.invoke(app, [*base, "list", "--db", str(tmp_path / "nope.sqlite")])
    assert isinstance(r.exception, ZephyrError) and "audit log not found" in str(r.exception)
    r = runner.invoke(app, [*base, "approve", "42", "--db", str(db)])
    assert isinstance(r.exception, ZephyrError) and "no audit entry with id 42" in str(r.exception)
