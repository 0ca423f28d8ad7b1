"""An independent checker for the synthetic STEM data.

For every family it re-derives the answer from the question TEXT alone, with its own tables and
a different method (regex parsing + exact Fraction arithmetic, enumeration instead of formulas,
integer square roots), then compares it with the stated final answer of sft/test/pref/mcqa rows.
"""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction

import pytest

from zephyr.data.schema import extract_answer, normalize_answer
from zephyr.data.synth import FAMILIES, generate

N = 250  # rows per family and kind: a few hundred, still ~1 s

NUM = r"-?\d+(?:\.\d+)?"


def _round(x: Fraction, places: int) -> Fraction:
    """Half away from zero, exactly."""
    scale = 10**places
    n = math.floor(abs(x) * scale + Fraction(1, 2))
    return Fraction(n if x >= 0 else -n, scale)


def _num(s: str) -> Fraction:
    return Fraction(s)


# --- one solver per family: question text -> (value, unit, places) ------------------------------


def arithmetic(q: str):
    a, op, b = re.search(r"(\d+) ([-+×÷]) (\d+)", q).groups()
    a, b = int(a), int(b)
    if op == "÷":
        assert a % b == 0, q
    value = {"+": a + b, "-": a - b, "×": a * b, "÷": Fraction(a, b)}[op]
    return Fraction(value), "", 0


def linear_equation(q: str):
    m = re.search(r"(?:Solve for (\w): |Find (\w) if |Solve the equation )(.+?)\.?$", q)
    eq = m.group(3)
    var = m.group(1) or m.group(2) or re.search(r"[a-z]", eq).group(0)
    left, right = eq.split(" = ")

    def side(expr: str, x: Fraction) -> Fraction:
        py = re.sub(r"(\d)\(", r"\1*(", re.sub(rf"(\d){var}", rf"\1*{var}", expr))
        return eval(py, {}, {var: x})  # trusted text produced by the generator under test

    def f(x: Fraction) -> Fraction:
        return side(left, x) - side(right, x)

    root = -f(Fraction(0)) / (f(Fraction(1)) - f(Fraction(0)))  # f is linear
    return root, "", 0


# unit -> (dimension, size in a base unit); temperature handled apart
UNITS = {
    "m": ("L", 1), "km": ("L", 1000), "cm": ("L", Fraction(1, 100)), "mm": ("L", Fraction(1, 1000)),
    "g": ("M", 1), "kg": ("M", 1000), "mg": ("M", Fraction(1, 1000)),
    "L": ("V", 1), "mL": ("V", Fraction(1, 1000)),
    "s": ("T", 1), "min": ("T", 60), "h": ("T", 3600),
    "m/s": ("S", 1), "km/h": ("S", Fraction(1000, 3600)),
}  # fmt: skip
NAMES = {
    "metres": "m", "kilometres": "km", "centimetres": "cm", "millimetres": "mm", "grams": "g",
    "kilograms": "kg", "milligrams": "mg", "litres": "L", "millilitres": "mL", "seconds": "s",
    "minutes": "min", "hours": "h",
}  # fmt: skip


def unit_conversion(q: str):
    m = re.search(rf"({NUM}) (\S+) (?:to|in) (\S+?)\.", q)
    if m:
        v, u1, u2 = m.groups()
    else:
        name, v, u1 = re.search(rf"How many (\w+) are there in ({NUM}) (\S+)\?", q).groups()
        u2 = NAMES[name]
    v = _num(v)
    places = 2 if "2 decimal places" in q else None
    if {u1, u2} == {"°C", "K"}:
        value = v + Fraction("273.15") if u1 == "°C" else v - Fraction("273.15")
    else:
        (d1, s1), (d2, s2) = UNITS[u1], UNITS[u2]
        assert d1 == d2, q
        value = v * Fraction(s1) / Fraction(s2)
    return value, u2, places


def kinematics(q: str):
    places = 2 if "2 decimal places" in q else None
    if "falls" in q:
        h = int(re.search(r"falls (\d+) m", q).group(1))
        g = _num(re.search(rf"(?:g = |acceleration )({NUM}) m/s²", q).group(1))
        big = 2 * g * h * 10**4  # v = sqrt(big) / 100; round sqrt(big) to the nearest integer
        assert big.denominator == 1
        n = (math.isqrt(4 * big.numerator) + 1) // 2
        return Fraction(n, 100), "m/s", 2
    if "average speed" in q:
        d, du, t, tu = re.search(r"(\d+) (km|m) in (\d+) (h|s)", q).groups()
        return Fraction(int(d), int(t)), f"{du}/{tu}", places
    if "How long" in q or "How many seconds" in q:
        v = int(re.search(r"(\d+) m/s", q).group(1))
        d = int(re.search(r"(\d+) m[?.]", q).group(1))
        return Fraction(d, v), "s", places
    u = 0 if "from rest" in q else int(re.search(r"at (\d+) m/s\b(?!²)", q).group(1))
    a = int(re.search(r"(\d+) m/s²", q).group(1))
    t = int(re.search(r"for (\d+) s\b", q).group(1))
    if "brakes" in q or "decelerates" in q:
        return Fraction(u - a * t), "m/s", places
    if "How far" in q:
        return u * t + Fraction(a * t * t, 2), "m", places
    return Fraction(u + a * t), "m/s", places


def percent_ratio(q: str):
    places = 2 if "2 decimal places" in q else None
    if m := re.search(r"costs (\d+) dollars\. Its price (rises|is reduced) by (\d+)%", q):
        price, how, p = int(m.group(1)), m.group(2), int(m.group(3))
        factor = 1 + Fraction(p, 100) if how == "rises" else 1 - Fraction(p, 100)
        return price * factor, "dollars", places
    if m := re.search(r"(\d+)% of (\d+)", q):
        return Fraction(int(m.group(1)) * int(m.group(2)), 100), "", places
    if m := re.search(r"What percent of (\d+) is (\d+)\?", q):
        return Fraction(int(m.group(2)) * 100, int(m.group(1))), "%", places
    if m := re.search(r"(\d+) is what percentage of (\d+)\?", q):
        return Fraction(int(m.group(1)) * 100, int(m.group(2))), "%", places
    if m := re.search(r"from (\d+) to (\d+)\. What is the percentage (increase|decrease)", q):
        old, new = int(m.group(1)), int(m.group(2))
        assert (new > old) == (m.group(3) == "increase"), q
        return Fraction(abs(new - old) * 100, old), "%", places
    if m := re.search(
        r"(\w+) and (\w+) share (\d+) sweets in the ratio (\d+):(\d+)\. How many sweets does (\w+) get",
        q,
    ):
        p1, p2, total, a, b, who = m.groups()
        share = int(a) if who == p1 else int(b)
        return Fraction(int(total) * share, int(a) + int(b)), "", places
    a, b = (int(x) for x in re.search(r"(\d+):(\d+)", q).groups())
    g = math.gcd(a, b)
    return f"{a // g}:{b // g}", "", None


# own tables: IUPAC-style precise values and school values, as the question states them
PRECISE = {"H": "1.008", "C": "12.01", "N": "14.01", "O": "16.00", "Na": "22.99", "Mg": "24.31",
           "Al": "26.98", "S": "32.06", "Cl": "35.45", "K": "39.10", "Ca": "40.08",
           "Fe": "55.85", "Cu": "63.55", "Zn": "65.38"}  # fmt: skip
SCHOOL = {"H": "1", "C": "12", "N": "14", "O": "16", "Na": "23", "Mg": "24", "Al": "27",
          "S": "32", "Cl": "35.5", "K": "39", "Ca": "40", "Fe": "56", "Cu": "63.5", "Zn": "65"}  # fmt: skip


def count_atoms(formula: str) -> dict[str, int]:
    """A stack-based formula parser (the generator uses a recursive regex one)."""
    stack: list[dict[str, int]] = [{}]
    i = 0
    while i < len(formula):
        ch = formula[i]
        if ch == "(":
            stack.append({})
            i += 1
            continue
        if ch == ")":
            j = i + 1
            while j < len(formula) and formula[j].isdigit():
                j += 1
            mult = int(formula[i + 1 : j] or 1)
            inner = stack.pop()
            for e, c in inner.items():
                stack[-1][e] = stack[-1].get(e, 0) + c * mult
            i = j
            continue
        j = i + 1
        if j < len(formula) and formula[j].islower():
            j += 1
        elem = formula[i:j]
        k = j
        while k < len(formula) and formula[k].isdigit():
            k += 1
        stack[-1][elem] = stack[-1].get(elem, 0) + int(formula[j:k] or 1)
        i = k
    return stack[0]


def _molar(formula: str, table: dict[str, str]) -> Fraction:
    return sum(c * Fraction(table[e]) for e, c in count_atoms(formula).items())


def molar_mass(q: str):
    if "molar mass of" in q:
        m = re.search(r"molar mass of ([A-Z][A-Za-z0-9()]*) \(|, ([A-Z][A-Za-z0-9()]*)\. Atomic", q)
        formula = m.group(1) or m.group(2)
        given = dict(re.findall(rf"\b([A-Z][a-z]?) = ({NUM})", q))
        assert set(given) == set(count_atoms(formula)), q
        assert given in ({e: PRECISE[e] for e in given}, {e: SCHOOL[e] for e in given}), q
        places = 2 if "2 decimal places" in q else None
        return _molar(formula, given), "g/mol", places
    m = re.search(r"of ([A-Z][A-Za-z0-9()]*)\? \(M|\(([A-Z][A-Za-z0-9()]*), M =", q)
    formula = m.group(1) or m.group(2)
    M = _num(re.search(rf"M = ({NUM}) g/mol", q).group(1))
    # the stated M is the formula's molar mass from one of the two tables
    assert M in (_round(_molar(formula, PRECISE), 2), _molar(formula, SCHOOL)), q
    if m := re.search(rf"({NUM}) mol of", q):
        return _num(m.group(1)) * M, "g", 2
    mass = _num(re.search(rf"({NUM}) g(?!/)", q).group(1))
    return mass / M, "mol", 2


def probability(q: str):
    if "without replacement" in q:
        bag = dict((c, int(n)) for n, c in re.findall(r"(\d+) (\w+)", q.split(" marbles")[0]))
        target = re.search(r"both are (\w+)", q).group(1)
        marbles = [c for c, n in bag.items() for _ in range(n)]
        pairs = list(itertools.permutations(range(len(marbles)), 2))
        good = sum(marbles[i] == target and marbles[j] == target for i, j in pairs)
        return Fraction(good, len(pairs)), "", None
    if "marble is picked" in q:
        bag = dict((c, int(n)) for n, c in re.findall(r"(\d+) (\w+)", q.split(" marbles")[0]))
        target = re.search(r"that it is (\w+)\?", q).group(1)
        return Fraction(bag[target], sum(bag.values())), "", None
    if m := re.search(r"greater than (\d)", q):
        return Fraction(sum(x > int(m.group(1)) for x in range(1, 7)), 6), "", None
    if m := re.search(r"(?:total|sum) is (\d+)", q):
        rolls = list(itertools.product(range(1, 7), repeat=2))
        return Fraction(sum(a + b == int(m.group(1)) for a, b in rolls), len(rolls)), "", None
    if m := re.search(r"tossed (\d+) times.*exactly (\d+) (head|tail)", q):
        n, k, side = int(m.group(1)), int(m.group(2)), m.group(3)[0].upper()
        flips = list(itertools.product("HT", repeat=n))
        return Fraction(sum(f.count(side) == k for f in flips), len(flips)), "", None
    if m := re.search(r"from 1 to (\d+) .*multiple of (\d+)", q):
        top, k = int(m.group(1)), int(m.group(2))
        return Fraction(sum(x % k == 0 for x in range(1, top + 1)), top), "", None
    p = _num(re.search(rf"is ({NUM})\. What is the probability that this does not", q).group(1))
    return 1 - p, "", None


SOLVERS = {f.__name__: f for f in (arithmetic, linear_equation, unit_conversion, kinematics,
                                   percent_ratio, molar_mass, probability)}  # fmt: skip


def _matches(answer: str, expected, unit: str, places: int | None, q: str) -> bool:
    """Whether a stated answer text is the expected value, unit and stated rounding."""
    if isinstance(expected, str):  # a ratio
        return answer == expected
    m = re.fullmatch(rf"({NUM}(?:/\d+)?)\s*(.*)", answer)
    if not m or m.group(2) != unit:
        return False
    text = m.group(1)
    if places is not None:
        decimals = len(text.split(".")[1]) if "." in text else 0
        return decimals == places and Fraction(text) == _round(expected, places)
    if "lowest terms" in q and "/" in text:
        n, d = (int(x) for x in text.split("/"))
        if math.gcd(n, d) != 1:
            return False
    return Fraction(text) == expected


def test_every_family_has_a_solver():
    assert set(SOLVERS) == set(FAMILIES) and len(FAMILIES) >= 6


@pytest.mark.parametrize("family", sorted(SOLVERS))
def test_sft_and_test_answers_are_right(family):
    rows = generate("sft", N, seed=11, families=[family]) + generate(
        "test", N // 2, seed=11, families=[family]
    )
    assert len(rows) >= N
    for row in rows:
        q = row["instruction"]
        expected, unit, places = SOLVERS[family](q)
        stated = extract_answer(row["output"])
        assert _matches(stated, expected, unit, places, q), (q, stated, expected, unit)
        if "answer_text" in row:
            assert row["answer_text"] == stated


@pytest.mark.parametrize("family", sorted(SOLVERS))
def test_pref_chosen_right_and_rejected_wrong_or_bare(family):
    for row in generate("pref", N, seed=12, families=[family]):
        q = row["prompt"]
        expected, unit, places = SOLVERS[family](q)
        assert _matches(extract_answer(row["chosen"]), expected, unit, places, q)
        rejected = extract_answer(row["rejected"])
        if row["error"] == "bare":
            assert row["rejected"].strip() == f"Answer: {rejected}"
        else:
            assert not _matches(rejected, expected, unit, places, q), (q, row["rejected"])


@pytest.mark.parametrize("family", sorted(SOLVERS))
def test_mcqa_key_is_the_only_right_choice(family):
    for row in generate("mcqa", N, seed=13, families=[family]):
        q = row["question"]
        expected, unit, places = SOLVERS[family](q)
        right = [i for i, c in enumerate(row["choices"]) if _matches(c, expected, unit, places, q)]
        assert right == [row["answer"]], (q, row["choices"], row["answer"])


def test_checker_catches_a_wrong_answer():
    """The checker is not vacuous: a nudged answer or a wrong unit fails it."""
    q = "Convert 3.5 km to m."
    expected, unit, places = unit_conversion(q)
    assert _matches("3500 m", expected, unit, places, q)
    assert not _matches("350 m", expected, unit, places, q)
    assert not _matches("3500 km", expected, unit, places, q)
    q = "A bag has 3 red and 5 blue marbles. One marble is picked at random. What is the probability that it is red? Give the answer as a fraction in lowest terms."
    assert _matches("3/8", *probability(q), q)
    assert not _matches("6/16", *probability(q), q)
    assert normalize_answer("2.50 mol") == normalize_answer("2.5 mol")
