"""Practice mode: hints before answers, and a checker that only says "correct" when it knows.

A `Session` holds one problem and climbs a ladder: nudge -> targeted hint -> worked example of a
similar problem (made by the synthetic generators) -> the final answer, only when the operator's
policy allows (`practice.reveal_answer`: never | after_hints | always). `check(answer)` answers
"correct" / "not yet" only when Zephyr knows the answer exactly, else "cannot verify":
- problems of the synthetic families (issued here, or typed by the student and recognised:
  an arithmetic expression, average speed, v = u + at), the value computed with the calculator;
- GSM8K questions found in a known set whose `<<expr=result>>` steps all recompute exactly;
- multiple-choice items with a known key (issued here, or recognised as above).
No model is involved: every verdict comes from exact arithmetic, never from the 135M model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from zephyr.data.schema import LETTERS
from zephyr.errors import ZephyrError
from zephyr.tutor.calculator import evaluate, format_value, strip_annotations

LEVELS = ("nudge", "hint", "example", "answer")
NUDGES = {
    "arithmetic": "Split the numbers into hundreds, tens and ones and work one place at a time.",
    "kinematics": "List what you know with units (distance, time, speeds, acceleration) and "
    "what is asked. Which formula links exactly those quantities?",
    "linear_equation": "Undo the operations on x in reverse order, doing the same to both sides.",
    "unit_conversion": "How many of the smaller unit make one of the larger unit?",
    "percent_ratio": "A percentage is a part out of 100: what is the part, what is the whole?",
    "molar_mass": "Link mass, amount (mol) and molar mass: m = n × M.",
    "probability": "Count the outcomes you want and all equally likely outcomes.",
    "gsm8k": "Read the question again: which quantities are given, and what is asked? "
    "Work out one intermediate quantity at a time.",
}
GENERIC_NUDGE = (
    "What is given, and what is asked? Write both down with their units, then think about which "
    "rule connects them."
)


@dataclass
class Known:
    """A problem with (maybe) a known answer."""

    question: str
    source: str  # "synth:<family>" | "gsm8k" | "mcqa" | "unknown"
    family: str | None = None
    value: Fraction | None = None
    unit: str = ""
    places: int | None = None  # the answer is rounded to this many places
    answer: str | None = None  # as written after "Answer:"
    steps: list[str] = field(default_factory=list)
    choices: list[str] | None = None
    key: int | None = None  # index of the right choice
    kind: str = ""  # the subtype, e.g. "average" (kinematics), "add" (arithmetic)

    @property
    def verifiable(self) -> bool:
        return self.key is not None or self.value is not None


# --- recognising a problem -------------------------------------------------------------------

_NUM = r"(\d+(?:[.,]\d+)?)"
_AVG = re.compile(
    rf"{_NUM}\s*(km|m|miles?)\b(?!/).*?\b(?:in|takes?)\s*{_NUM}\s*(hours?|h|s|seconds?|minutes?|min)\b",
    re.I,
)
_UAT = re.compile(
    rf"(?:moving at|at)\s*{_NUM}\s*m/s\b.*?accelerates at\s*{_NUM}\s*m/s²?\w*\s*for\s*{_NUM}\s*s",
    re.I,
)
_REST = re.compile(rf"from rest.*?accelerates at\s*{_NUM}\s*m/s²?\w*\s*for\s*{_NUM}\s*s", re.I)
_EXPR = re.compile(  # the whole question is the expression: "What is 347 + 285?"
    r"^\s*(?:what is|calculate|work out|find the value of|compute)\s+([-\d.,()+×÷*/x ]+?)\s*[?.]?\s*$",
    re.I,
)
_TIME_UNITS = {"h": "h", "hour": "h", "hours": "h", "s": "s", "second": "s", "seconds": "s"}
_TIME_UNITS |= {"min": "min", "minute": "min", "minutes": "min"}


def _num(text: str) -> Fraction:
    return Fraction(Decimal(text.replace(",", "")))


def _speed(q: str) -> Known | None:
    m = _AVG.search(q)
    if m is None or not re.search(r"speed", q, re.I):
        return None
    d, du, t, tu = _num(m.group(1)), m.group(2).lower(), _num(m.group(3)), m.group(4).lower()
    tu = _TIME_UNITS.get(tu, tu)
    if t == 0:
        return None
    du = "mile" if du.startswith("mile") else du
    unit = {"h": f"{du}/h", "s": f"{du}/s", "min": f"{du}/min"}[tu]
    if du == "mile" and tu == "h":
        unit = "mph"
    asked = re.search(r"in\s*(km/h|m/s|mph)", q)
    value = d / t
    if asked and asked.group(1) != unit:
        value, unit = _convert_speed(value, unit, asked.group(1))
        if value is None:
            return None
    rule = "Average speed = distance ÷ time."
    steps = [rule, f"speed = {m.group(1)} {du} ÷ {m.group(3)} {tu} = {format_value(value)} {unit}"]
    return _known(q, "kinematics", "average", value, unit, steps)


def _convert_speed(v: Fraction, unit: str, want: str) -> tuple[Fraction | None, str]:
    per_s = {"m/s": Fraction(1), "km/h": Fraction(1000, 3600), "km/s": Fraction(1000)}
    per_s |= {"m/h": Fraction(1, 3600), "m/min": Fraction(1, 60), "km/min": Fraction(1000, 60)}
    if unit not in per_s or want not in per_s:
        return None, unit
    return v * per_s[unit] / per_s[want], want


def _final_speed(q: str) -> Known | None:
    m, rest = _UAT.search(q), _REST.search(q)
    if m is None and rest is None:
        return None
    u, a, t = (m.group(1), m.group(2), m.group(3)) if m else ("0", rest.group(1), rest.group(2))
    value = _num(u) + _num(a) * _num(t)
    steps = ["Use v = u + at.", f"v = {u} + {a} × {t} = {format_value(value)} m/s"]
    return _known(q, "kinematics", "v", value, "m/s", steps)


def _arithmetic(q: str) -> Known | None:
    m = _EXPR.search(q)
    if m is None:
        return None
    expr = re.sub(r"(?<=\d)\s*x\s*(?=\d)", " × ", m.group(1)).strip(" .?")
    if not re.search(r"\d\s*[-+×÷*/]", expr):
        return None  # a bare number is not a problem
    try:
        value = evaluate(expr)
    except ZephyrError:
        return None
    ops = (("add", "+"), ("sub", "-"), ("mul", "×"), ("mul", "*"), ("div", "÷"), ("div", "/"))
    op = next((name for name, sign in ops if sign in expr), "")  # the worked example's kind
    steps = ["Work it out one place value at a time.", f"{expr} = {format_value(value)}"]
    return _known(q, "arithmetic", op, value, "", steps)


def _known(q: str, family: str, kind: str, value: Fraction, unit: str, steps: list[str]) -> Known:
    places = None if (value * 100).denominator == 1 else 2
    answer = format_value(value) if places is None else f"{float(value):.2f}"
    answer = f"{answer} {unit}".strip()
    return Known(q, f"synth:{family}", family, value, unit, places, answer, steps, kind=kind)


def _from_problem(p) -> Known:
    """A synthetic generator's Problem as a practice item."""
    answer = p.answer
    number = re.match(r"-?\d+(?:\.\d+)?(?:/\d+)?", answer)
    places = len(number.group(0).split(".")[1]) if number and "." in number.group(0) else None
    return Known(
        p.question, f"synth:{p.family}", p.family, Fraction(p.value), p.unit, places, answer,
        list(p.steps), kind=p.key.split(":")[0],
    )  # fmt: skip


def gsm8k_known(question: str, reference: str) -> Known:
    """A GSM8K question with its reference: verifiable when every annotation recomputes."""
    body, _, final = reference.rpartition("####")
    annotations = re.findall(r"<<([^=<>]+)=([^<>]+)>>", body)
    try:
        ok = bool(annotations) and all(
            evaluate(expr) == _num(res.strip()) for expr, res in annotations
        )
        value = _num(final.strip()) if ok else None
    except (ZephyrError, InvalidOperation, ValueError, ZeroDivisionError):
        value = None
    steps = [strip_annotations(s) for s in body.strip().splitlines()]
    answer = final.strip() if value is not None else None
    return Known(question, "gsm8k", "gsm8k", value, "", None, answer, steps)


def recognise(question: str, choices: list[str] | None = None, bank: dict | None = None) -> Known:
    """What Zephyr knows about a student's problem (a bank of known items is searched first)."""
    norm = " ".join(question.split()).lower()
    known = (bank or {}).get(norm)
    if known is None:
        for parse in (_final_speed, _speed, _arithmetic):
            if (known := parse(question)) is not None:
                break
    known = known or Known(question, "unknown")
    if choices and known.source == "mcqa":
        return with_choices(known, choices)
    if choices:
        known = Known(**{**known.__dict__, "choices": list(choices)})
        if known.key is None and known.value is not None:
            hits = [i for i, c in enumerate(choices) if _matches(known, c) == "correct"]
            known.key = hits[0] if len(hits) == 1 else None
        known.source = known.source if known.key is None else f"mcqa+{known.source}"
    return known


def load_gsm8k_bank(data_root: str | Path | None) -> dict[str, Known]:
    """GSM8K train/test questions (normalised text -> Known) from a ../shared/data layout."""
    import json

    bank: dict[str, Known] = {}
    if data_root is None:
        return bank
    for name in ("train", "test"):
        path = Path(data_root) / "gsm8k" / f"{name}.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                key = " ".join(row["question"].split()).lower()
                bank[key] = gsm8k_known(row["question"], row["answer"])
    return bank


def load_mcqa_bank(data_root: str | Path | None) -> dict[str, Known]:
    """ARC questions with their keys (normalised text -> Known) from a ../shared/data layout."""
    from zephyr.eval.tasks.mcqa_letter import arc_rows

    bank: dict[str, Known] = {}
    root = Path(data_root) if data_root else None
    for path in sorted(root.glob("arc/*/*.jsonl")) if root and root.is_dir() else []:
        for r in arc_rows(path):
            key = " ".join(r["question"].split()).lower()
            bank[key] = Known(r["question"], "mcqa", choices=r["choices"], key=r["answer"])
    return bank


def with_choices(known: Known, choices: list[str]) -> Known:
    """A banked MCQA item in the student's own choice order (None: different choices)."""
    if known.choices is None or known.key is None:
        return known
    theirs = [c.strip().lower() for c in choices]
    ours = [c.strip().lower() for c in known.choices]
    if sorted(theirs) != sorted(ours):
        return Known(known.question, "unknown")
    return Known(known.question, "mcqa", choices=list(choices), key=theirs.index(ours[known.key]))


# --- checking an answer ------------------------------------------------------------------------

_ANSWER = re.compile(r"(-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?)\s*([^\s\d.,;!?][^\s,;!?]*)?")


def _norm_unit(u: str) -> str:
    u = u.strip().lower().rstrip(".")
    return {"kph": "km/h", "kmh": "km/h", "km/hr": "km/h", "hours": "h", "hour": "h"}.get(u, u)


def _matches(known: Known, text: str) -> str:
    m = _ANSWER.search(text.replace("−", "-"))
    if m is None:
        return "not yet"
    try:
        value = evaluate(m.group(1).replace(",", ""))
    except ZephyrError:
        return "not yet"
    want = known.value
    if known.places is not None:
        close = round(value, known.places) == round(want, known.places)
    else:
        close = value == want
    unit, expected = _norm_unit(m.group(2) or ""), _norm_unit(known.unit)
    if expected and unit and unit != expected and expected != "%":
        return "not yet"
    return "correct" if close else "not yet"


def check(known: Known, text: str) -> dict:
    """{"verdict": "correct" | "not yet" | "cannot verify", "message"}."""
    text = text.strip()
    if known.choices and known.key is not None:
        letter = re.fullmatch(r"\(?([A-Za-z])\)?\.?", text)
        if letter and letter.group(1).upper() in LETTERS[: len(known.choices)]:
            picked = LETTERS.index(letter.group(1).upper())
        else:
            lowered = [c.strip().lower() for c in known.choices]
            picked = lowered.index(text.lower()) if text.lower() in lowered else None
        if picked is not None:
            ok = picked == known.key
            return _verdict("correct" if ok else "not yet", known)
    if known.value is None:
        return {
            "verdict": "cannot verify",
            "message": "I can't check this answer exactly, so I won't say whether it is right. "
            "Check it against your working, or ask your teacher.",
        }
    verdict = _matches(known, text)
    if known.unit and known.unit != "%" and not re.search(r"[A-Za-z%°]", text):
        return {"verdict": "not yet", "message": "Not yet: give the value with its unit."}
    return _verdict(verdict, known)


def _verdict(verdict: str, known: Known) -> dict:
    if verdict == "correct":
        return {"verdict": "correct", "message": "Correct!"}
    return {"verdict": "not yet", "message": "Not yet. Look at your working again, or ask a hint."}


# --- the ladder --------------------------------------------------------------------------------


def similar(known: Known, seed: int = 0) -> tuple[str, str] | None:
    """(question, worked solution) of another problem of the same family and kind."""
    from zephyr.data.synth import MAKERS

    if known.family not in MAKERS:
        return None
    rng = random.Random(f"zephyr-practice:{seed}:{known.question}")
    for _ in range(500):
        p = MAKERS[known.family](rng)
        if p.question != known.question and (not known.kind or p.key.startswith(known.kind)):
            return p.question, p.solution()
    return None


def new_problem(family: str, seed: int | None = None) -> Known:
    """A fresh problem of a synthetic family (its answer known exactly)."""
    from zephyr.data.synth import MAKERS

    if family not in MAKERS:
        raise ZephyrError(f"unknown practice family {family!r}; use one of {', '.join(MAKERS)}")
    return _from_problem(MAKERS[family](random.Random(seed)))


class Session:
    """One problem and how far up the ladder the student has gone."""

    def __init__(self, known: Known, reveal: str = "after_hints", worked_example: bool = True):
        if reveal not in ("never", "after_hints", "always"):
            raise ZephyrError(
                f"practice reveal_answer {reveal!r}: use never, after_hints or always"
            )
        self.known, self.reveal, self.example_ok = known, reveal, worked_example
        self.level = 0  # rungs given so far
        self.revealed = False

    def hint(self) -> dict:
        """The next rung: {"level", "kind", "text"}."""
        kinds = [k for k in LEVELS if k != "example" or self.example_ok]
        if self.level >= len(kinds) - 1:
            return self.answer()
        kind = kinds[self.level]
        self.level += 1
        return {"level": self.level, "kind": kind, "text": self._text(kind)}

    def _text(self, kind: str) -> str:
        k = self.known
        if kind == "nudge":
            return NUDGES.get(k.family or "", GENERIC_NUDGE)
        if kind == "hint":
            if k.steps:
                setup = [strip_annotations(x) for x in k.steps[1:] if " = " in x][:1]
                setup = [x.rsplit(" = ", 1)[0] + " = ?" for x in setup]
                return "Start like this: " + " Then ".join([strip_annotations(k.steps[0]), *setup])
            return "Try the same problem with small, easy numbers first, then use the same steps."
        example = similar(k)
        if example is None:
            return "I have no worked example of this kind of problem; try the hint again."
        q, solution = example
        return f"A similar problem: {q}\n{strip_annotations(solution)}"

    def may_reveal(self) -> bool:
        if self.reveal == "always":
            return True
        return self.reveal == "after_hints" and self.level >= len(LEVELS) - 1 - (
            not self.example_ok
        )

    def answer(self) -> dict:
        """The final answer, when the policy allows and Zephyr knows it."""
        if not self.may_reveal():
            why = (
                "your teacher has not allowed answers"
                if self.reveal == "never"
                else ("work through the hints first")
            )
            return {"level": self.level, "kind": "withheld", "text": f"Not yet: {why}."}
        k = self.known
        if k.choices and k.key is not None:
            text = f"{LETTERS[k.key]}. {k.choices[k.key]}"
        elif k.answer is not None:
            worked = "\n".join(strip_annotations(s) for s in k.steps)
            text = f"{worked}\nAnswer: {k.answer}" if worked else f"Answer: {k.answer}"
        else:
            return {"level": self.level, "kind": "unknown", "text": "I can't verify the answer "
                    "to this problem, so I won't give one; ask your teacher."}  # fmt: skip
        self.revealed = True
        return {"level": self.level, "kind": "answer", "text": text}

    def check(self, text: str) -> dict:
        return check(self.known, text)

    def to_dict(self) -> dict:
        k = self.known
        return {
            "question": k.question, "source": k.source, "family": k.family,
            "verifiable": k.verifiable, "choices": k.choices, "level": self.level,
            "revealed": self.revealed,
        }  # fmt: skip


PRACTICE_HELP = (
    "Practice mode: type a problem (or `new FAMILY` for one of mine), then `hint` for the next "
    "hint, `answer` for the answer (when allowed), or type your answer to have it checked. "
    "/chat leaves."
)


class ChatPractice:
    """The terminal's practice mode: one line in, the tutor's reply out; `log(event, asked, said)`."""

    def __init__(self, policy: Any, log: Callable[[str, str, str], None], bank: dict | None = None):
        self.rules, self.log, self.bank = policy.practice, log, bank or {}
        self.session: Session | None = None

    def turn(self, text: str) -> str:
        word = text.strip().lower()
        if self.session is None or word.startswith("new "):
            if word.startswith("new "):
                known = new_problem(word[4:].strip())
            else:
                known = recognise(text, None, self.bank)
            self.session = Session(known, self.rules.reveal_answer, self.rules.worked_example)
            self.log("start", known.question, f"source={known.source}")
            if word.startswith("new "):
                return f"{known.question}\n(type `hint` for a hint, or your answer)"
            sure = "I can check your answer." if known.verifiable else (
                "I can't check answers to this one exactly."
            )  # fmt: skip
            step = self.session.hint()  # the first rung comes with the problem
            self.log(f"{step['kind']}:{step['level']}", known.question, step["text"])
            return f"{sure} {step['text']}"
        if word in ("hint", "next"):
            step = self.session.hint()
            self.log(f"{step['kind']}:{step['level']}", self.session.known.question, step["text"])
            return step["text"]
        if word in ("answer", "reveal", "show answer"):
            step = self.session.answer()
            self.log(f"reveal:{step['kind']}", self.session.known.question, step["text"])
            return step["text"]
        verdict = self.session.check(text)
        self.log(f"check:{verdict['verdict']}", text, verdict["message"])
        return verdict["message"]


CHECKED = "(Zephyr checked this answer exactly: it is right.)"
DISAGREE = (
    "(Zephyr's exact check does not agree with this answer: don't rely on it. "
    "Practice mode gives hints.)"
)


def verify_reply(question: str, reply: str) -> str | None:
    """A note on the model's `Answer:` line when Zephyr can check it exactly, else None."""
    from zephyr.data.schema import extract_answer

    known = recognise(question)
    answer = extract_answer(reply)
    if not known.verifiable or answer is None:
        return None
    return CHECKED if check(known, answer)["verdict"] == "correct" else DISAGREE
