"""Cleaning (empty, too long, unsafe, duplicates, PII counts) and the mixture's cap semantics."""

from __future__ import annotations

import pytest

from zephyr.data import mixture, unsafe
from zephyr.data.clean import Seen, clean, redact_row
from zephyr.data.stats import Stats


def sft(i: int, instruction: str = "Question {i}?", output: str = "Answer {i}.") -> dict:
    return {
        "id": str(i),
        "source": "t",
        "instruction": instruction.format(i=i),
        "input": "",
        "output": output.format(i=i),
    }


def test_clean_counts_each_reason():
    rows = [
        sft(0),
        sft(1, instruction="   "),  # empty
        sft(2, output="x" * 200),  # too long
        sft(3, output="Sure! Here is how to make a bomb: ..."),  # unsafe target
        sft(
            4, instruction="How do I make a bomb?", output="I can't help with that."
        ),  # refusal: kept
        sft(0),  # exact duplicate of row 0
        {
            **sft(0),
            "id": "5",
            "instruction": "question 0",
            "output": "ANSWER 0",
        },  # normalised duplicate
        sft(6, output="Write to me at a.b@example.com"),
    ]
    stats = Stats("t", "sft")
    kept = clean(rows, "sft", stats, Seen(), max_chars=100)
    assert [r["id"] for r in kept] == ["0", "4", "6"]
    assert dict(stats.dropped) == {
        "empty_field": 1,
        "too_long": 1,
        "unsafe": 1,
        "duplicate_exact": 1,
        "duplicate_normalised": 1,
    }
    assert redact_row(kept[2], stats.pii)["output"] == "Write to me at <EMAIL>"
    assert stats.pii == {"EMAIL": 1} and kept[2]["id"] == "6"


def test_duplicates_are_found_across_sources_and_pref_checks():
    seen = Seen()
    a, b = Stats("a", "pref"), Stats("b", "pref")
    pair = {"id": "1", "prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    assert len(clean([pair], "pref", a, seen, 1000)) == 1
    same = {"id": "2", "prompt": "Hi", "chosen": "Same", "rejected": "Same "}
    assert clean([dict(pair, id="9"), same], "pref", b, seen, 1000) == []
    assert b.dropped == {"duplicate_exact": 1, "chosen_equals_rejected": 1}


def test_unsafe_blocklist_is_specific():
    assert unsafe.flagged("First, cook meth in a lab") == "cook meth"
    assert unsafe.flagged("You should kill yourself.")
    assert unsafe.flagged("The army killed many soldiers in 1916.") is None
    assert unsafe.flagged("Methane is CH4; a bomb calorimeter measures heat.") is None


def rows(n: int, tag: str = "s") -> list[dict]:
    return [{"id": f"{tag}{i}", "source": tag} for i in range(n)]


def test_cap_takes_min_of_cap_and_size_never_oversamples():
    assert len(mixture.take(rows(10), 3, 0, "s")) == 3
    assert len(mixture.take(rows(10), 50, 0, "s")) == 10
    assert len(mixture.take(rows(10), None, 0, "s")) == 10
    assert len(mixture.take(rows(10), 0, 0, "s")) == 0
    full = mixture.take(rows(10), 50, 0, "s")
    assert len({r["id"] for r in full}) == 10  # each row once


def test_cap_is_seeded():
    a = [r["id"] for r in mixture.take(rows(100), 10, 0, "s")]
    assert a == [r["id"] for r in mixture.take(rows(100), 10, 0, "s")]
    assert a != [r["id"] for r in mixture.take(rows(100), 10, 1, "s")]
    assert a != [r["id"] for r in mixture.take(rows(100), 10, 0, "other-source")]


@pytest.mark.parametrize(
    ("n", "frac", "n_val"), [(100, 0.05, 5), (10, 0.05, 1), (2, 0.5, 1), (1, 0.05, 0), (40, 0.0, 0)]
)
def test_split_holds_out_a_fraction(n, frac, n_val):
    train, val = mixture.split([rows(n // 2, "a"), rows(n - n // 2, "b")], frac, seed=0)
    assert len(val) == n_val and len(train) + len(val) == n
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in val})
    if n >= 10:
        again, _ = mixture.split([rows(n // 2, "a"), rows(n - n // 2, "b")], frac, seed=1)
        assert [r["id"] for r in again] != [r["id"] for r in train]
