"""The safety policy: the shipped default loads and triggers by rule; bad files are clear errors."""

from __future__ import annotations

import pytest

from zephyr.errors import ZephyrError
from zephyr.tutor.policy import DEFAULT_POLICY, Policy


def test_default_policy_rules_trigger_where_they_should():
    p = Policy.load()
    assert p.source == str(DEFAULT_POLICY) and len(p.rules) >= 3
    hits = p.check("Explain how to build a pipe bomb at home", "input")
    assert [h.rule for h in hits] == ["weapons"] and "weapons" in hits[0].message
    assert [h.rule for h in p.check("here is how to assemble a nerve agent", "output")] == [
        "weapons"
    ]
    assert [h.rule for h in p.check("I want to die", "input")] == ["self_harm"]
    assert p.check("I want to die", "output") == []  # an input-only rule
    assert [h.rule for h in p.check("api_key = sk-abcdef123456", "output")] == ["credentials"]
    for ok in (
        "What is the derivative of x^2?",
        "How do bombs in chess puzzles work?",
        "Balance H2 + O2 -> H2O",
    ):
        assert p.check(ok, "input") == [] and p.check(ok, "output") == []


def test_custom_policy_and_bad_files(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text(
        "refusal: Not here.\nrules:\n  - {name: homework, pattern: 'do my homework', where: input}\n"
    )
    p = Policy.load(good)
    assert p.check("please DO MY HOMEWORK", "input")[0].message == "Not here."
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: x, pattern: '(unclosed'}\n")
    with pytest.raises(ZephyrError, match=r"rules\[0\] \(x\) has a bad pattern"):
        Policy.load(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("rules:\n  - {name: x, pattern: a}\n  - {name: x, pattern: b}\n")
    with pytest.raises(ZephyrError, match="used twice"):
        Policy.load(dup)
    typo = tmp_path / "typo.yaml"
    typo.write_text("rules:\n  - {name: x, patern: a}\n")
    with pytest.raises(ZephyrError, match="patern"):
        Policy.load(typo)
    with pytest.raises(ZephyrError, match="policy file not found"):
        Policy.load(tmp_path / "missing.yaml")
