"""Practice mode: recognising problems, the hint ladder, exact checks, the routes and the audit."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from zephyr.errors import ZephyrError
from zephyr.tutor.practice import (
    Session,
    check,
    gsm8k_known,
    new_problem,
    recognise,
)

TRAIN = "A train travels 150 km in 2.5 hours. What is its average speed in km/h?"
PLANTS = "Which gas do plants absorb from the air for photosynthesis?"
GASES = ["Oxygen", "Carbon dioxide", "Nitrogen", "Helium"]


def test_recognises_the_issue_problem_and_checks_value_and_unit():
    k = recognise(TRAIN)
    assert k.source == "synth:kinematics" and k.value == 60 and k.unit == "km/h"
    assert check(k, "60 km/h")["verdict"] == "correct"
    assert check(k, "60.0 km/h")["verdict"] == "correct"
    assert check(k, "19.5 km/h")["verdict"] == "not yet"  # the model's answer in the issue
    assert check(k, "60 m/s")["verdict"] == "not yet"  # right number, wrong unit
    assert check(k, "60")["message"].endswith("with its unit.")
    assert recognise("A car travels 90 km in 90 minutes. Average speed in km/h?").value == 60


def test_other_recognisers():
    assert recognise("What is 347 + 285?").value == 632
    v = recognise("A cart moving at 12 m/s accelerates at 3 m/s² for 4 s. Final speed?")
    assert v.value == 24 and v.unit == "m/s"
    rest = recognise("A car starts from rest and accelerates at 2 m/s² for 5 s. Its speed?")
    assert rest.value == 10
    assert not recognise("Why is the sky blue?").verifiable


def test_unknown_problems_cannot_be_verified():
    k = recognise(PLANTS, GASES)
    assert not k.verifiable
    assert check(k, "B")["verdict"] == "cannot verify"
    s = Session(k, "always")
    assert s.answer()["kind"] == "unknown"  # no answer is invented


def test_mcqa_key_from_a_recognised_problem():
    k = recognise(TRAIN, ["19.5 km/h", "60 km/h", "375 km/h", "6 km/h"])
    assert k.key == 1
    assert check(k, "B")["verdict"] == "correct" and check(k, "a")["verdict"] == "not yet"
    assert check(k, "60 km/h")["verdict"] == "correct"


def test_banked_mcqa_item_in_the_students_order():
    from zephyr.tutor.practice import Known

    bank = {PLANTS.lower(): Known(PLANTS, "mcqa", choices=GASES, key=1)}
    mine = ["Helium", "Nitrogen", "Carbon dioxide", "Oxygen"]
    k = recognise(PLANTS, mine, bank)
    assert k.key == 2 and check(k, "C")["verdict"] == "correct"
    assert check(k, "carbon dioxide")["verdict"] == "correct"
    assert not recognise(PLANTS, ["a", "b"], bank).verifiable


def test_gsm8k_reference_recomputed():
    ok = gsm8k_known("Q", "She has 3 + 4 = <<3+4=7>>7 apples.\nThen 7*2 = <<7*2=14>>14.\n#### 14")
    assert ok.value == Fraction(14) and check(ok, "14")["verdict"] == "correct"
    bad = gsm8k_known("Q", "She has 3 + 4 = <<3+4=8>>8 apples.\n#### 8")
    assert not bad.verifiable and check(bad, "8")["verdict"] == "cannot verify"


def test_ladder_and_reveal_policy():
    k = recognise(TRAIN)
    s = Session(k, "after_hints")
    assert s.answer()["kind"] == "withheld"
    steps = [s.hint() for _ in range(3)]
    assert [x["kind"] for x in steps] == ["nudge", "hint", "example"]
    assert "150 km ÷ 2.5 h = ?" in steps[1]["text"] and "60" not in steps[1]["text"]
    assert "similar problem" in steps[2]["text"] and "average speed" in steps[2]["text"].lower()
    assert TRAIN not in steps[2]["text"] and "<<" not in steps[2]["text"]
    final = s.hint()
    assert final["kind"] == "answer" and final["text"].endswith("Answer: 60 km/h")
    never = Session(k, "never")
    for _ in range(5):
        last = never.hint()
    assert last["kind"] == "withheld" and not never.revealed
    assert Session(k, "always").answer()["kind"] == "answer"
    with pytest.raises(ZephyrError):
        Session(k, "sometimes")


def test_new_problem_of_each_family_checks_its_own_answer():
    from zephyr.data.synth import FAMILIES

    for family in FAMILIES:
        k = new_problem(family, seed=3)
        assert k.verifiable
        assert check(k, k.answer)["verdict"] == "correct", (family, k.answer)
    with pytest.raises(ZephyrError, match="unknown practice family"):
        new_problem("astrology")


# --- through the server ------------------------------------------------------------------------


@pytest.fixture
def app_and_audit(tiny, tmp_path):
    from zephyr.tutor.audit import Audit
    from zephyr.tutor.policy import Policy
    from zephyr.tutor.server import ServeConfig, create_app

    model, tok = tiny
    audit = Audit(tmp_path / "audit.sqlite")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "practice: {default_mode: practice, reveal_answer: after_hints}\n"
        "mcqa: {debias: cyclic, min_confidence: 0.9}\n"
    )
    app = create_app(model, tok, "tiny", ServeConfig(), audit, Policy.load(policy_file))
    return app, audit


def test_practice_routes_ladder_checks_and_audit(app_and_audit):
    from fastapi.testclient import TestClient

    app, audit = app_and_audit
    with TestClient(app) as c:
        assert c.get("/v1/practice/policy").json()["default_mode"] == "practice"
        start = c.post("/v1/practice/start", json={"question": TRAIN}).json()
        sid = start["id"]
        assert start["verifiable"] and start["source"] == "synth:kinematics"
        assert c.post("/v1/practice/reveal", json={"id": sid}).json()["kind"] == "withheld"
        kinds = [c.post("/v1/practice/hint", json={"id": sid}).json()["kind"] for _ in range(3)]
        assert kinds == ["nudge", "hint", "example"]
        wrong = c.post("/v1/practice/check", json={"id": sid, "answer": "19.5 km/h"}).json()
        right = c.post("/v1/practice/check", json={"id": sid, "answer": "60 km/h"}).json()
        assert (wrong["verdict"], right["verdict"]) == ("not yet", "correct")
        shown = c.post("/v1/practice/reveal", json={"id": sid}).json()
        assert shown["kind"] == "answer" and "60 km/h" in shown["text"]
        other = c.post("/v1/practice/start", json={"question": PLANTS, "choices": GASES}).json()
        unsure = c.post("/v1/practice/check", json={"id": other["id"], "answer": "B"}).json()
        assert unsure["verdict"] == "cannot verify"
        fresh = c.post("/v1/practice/start", json={"family": "arithmetic", "seed": 1}).json()
        assert fresh["verifiable"] and fresh["family"] == "arithmetic"
        assert c.post("/v1/practice/hint", json={"id": "nope"}).status_code == 404
        assert c.post("/v1/practice/start", json={"family": "x"}).status_code == 422
    rows = [r for r in reversed(audit.rows()) if r["endpoint"] == "practice"]
    events = [r["finish_reason"] for r in rows]
    assert events[:8] == [
        "start", "reveal:withheld", "nudge:1", "hint:2", "example:3",
        "check:not yet", "check:correct", "reveal:answer",
    ]  # fmt: skip
    flags = rows[0]["flags"] if isinstance(rows[0]["flags"], list) else json.loads(rows[0]["flags"])
    assert flags[0]["session"] == sid and flags[0]["rule"] == "practice:start"


def test_mcqa_route_is_debiased_and_unsure_below_the_threshold(app_and_audit):
    from fastapi.testclient import TestClient

    app, _ = app_and_audit
    with TestClient(app) as c:
        body = c.post("/v1/mcqa", json={"question": PLANTS, "choices": GASES}).json()
    assert body["debias"] == "cyclic" and set(body["raw_probs"]) == set("ABCD")
    assert sum(body["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["unsure"] and body["message"].startswith("I'm not sure")  # a random model


def test_chat_practice_mode_ladder_and_audit(tiny, tmp_path):
    from zephyr.tutor.audit import Audit
    from zephyr.tutor.cli import chat_loop
    from zephyr.tutor.generate import GenParams
    from zephyr.tutor.policy import Policy

    model, tok = tiny
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("practice: {default_mode: practice, reveal_answer: after_hints}\n")
    audit = Audit(tmp_path / "audit.sqlite")
    lines = iter([TRAIN, "19.5 km/h", "hint", "hint", "answer", "60 km/h", "/quit"])
    said: list[str] = []
    chat_loop(
        model, tok, "tiny", "sys", GenParams(max_tokens=4), Policy.load(policy_file), audit,
        lambda prompt: next(lines), lambda text, end="\n": said.append(text),
    )  # fmt: skip
    text = "\n".join(said)
    assert "I can check your answer." in text and "Not yet." in text
    assert "150 km ÷ 2.5 h = ?" in text and "similar problem" in text
    assert "Answer: 60 km/h" in text and said[-1] == "Correct!"
    events = [r["finish_reason"] for r in reversed(audit.rows())]
    assert events == ["start", "nudge:1", "check:not yet", "hint:2", "example:3", "reveal:answer",
                      "check:correct"]  # fmt: skip


def test_verify_reply_notes():
    from zephyr.tutor.practice import CHECKED, DISAGREE, verify_reply

    wrong = "Use v = u + at.\nv = 150 + 2.5 × 2 = 155\nAnswer: 155 km/h"  # the demo M1's reply
    assert verify_reply(TRAIN, wrong) == DISAGREE
    assert verify_reply(TRAIN, "speed = 150 ÷ 2.5 = 60\nAnswer: 60 km/h") == CHECKED
    assert verify_reply(TRAIN, "no answer line") is None
    assert verify_reply("Why is the sky blue?", "Answer: 42") is None


def test_server_chat_appends_the_exact_check(app_and_audit, monkeypatch):
    from fastapi.testclient import TestClient

    from zephyr.tutor import routes_chat
    from zephyr.tutor.generate import GenResult
    from zephyr.tutor.practice import DISAGREE

    def fake_generate(model, tok, messages, params, on_text=None, cancel=None, input_ids=None):
        text = "v = 150 + 5 = 155\nAnswer: 155 km/h"
        if on_text:
            on_text(text)
        return GenResult(text, 1, 5, "stop")

    monkeypatch.setattr(routes_chat, "generate", fake_generate)
    app, audit = app_and_audit
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TRAIN}]})
    content = r.json()["choices"][0]["message"]["content"]
    assert content.endswith(DISAGREE) and content.startswith("v = 150")
    assert audit.rows(limit=1)[0]["response"] == content


def test_arithmetic_recogniser_needs_the_whole_question():
    assert recognise("Calculate 48 ÷ 6.").value == 8
    assert recognise("What is 12 x 3?").value == 36
    assert not recognise("What is 2 + 2 in binary?").verifiable  # context changes the answer
    assert not recognise("What is 5?").verifiable


def test_speed_recogniser_does_not_read_a_speed_as_a_distance():
    q = "A runner moving at 20 m/s slows down in 5 s. What is its speed at the end?"
    assert not recognise(q).verifiable
