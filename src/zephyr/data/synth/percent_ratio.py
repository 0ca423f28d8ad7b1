"""Percentages and ratios: p% of N, increase/decrease, 'what percent', percent change, sharing."""

from __future__ import annotations

from fractions import Fraction
from math import gcd

from zephyr.data.synth.problem import Mistake, Problem, fmt, pick, with_unit

FAMILY = "percent_ratio"

ITEMS = ("jacket", "bike", "phone", "lamp", "book", "ticket", "game", "chair")
PEOPLE = (("Ann", "Ben"), ("Sam", "Mia"), ("Leo", "Zoe"), ("Ravi", "Kate"))


def _percent_of(rng):
    p = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 50, 60, 75, 80])
    n = rng.randint(2, 60) * rng.choice([4, 10, 20])
    value = Fraction(p * n, 100)
    question = rng.choice(
        [f"What is {p}% of {n}?", f"Find {p}% of {n}.", f"Calculate {p}% of {n}."]
    )
    steps = [f"{p}% means {p}/100.", f"{p}/100 × {n} = {p * n}/100 = {fmt(value)}"]
    mistakes = [
        Mistake(
            "arithmetic",
            (steps[0], f"{p}/100 × {n} = {p * n}/100 = {fmt(value * 10)}"),
            fmt(value * 10),
        ),
        Mistake(
            "method",
            (f"{p}% of {n} is {n} ÷ {p}.", f"{n} ÷ {p} = {fmt(Fraction(n, p), 2)}"),
            fmt(Fraction(n, p), 2),
        ),
    ]
    return f"of:{p}:{n}", question, value, "", None, steps, mistakes


def _change(rng):
    item, price = rng.choice(ITEMS), rng.randint(2, 40) * 5
    p = rng.choice([10, 20, 25, 30, 40, 50, 15, 5])
    up = rng.random() < 0.5
    delta = Fraction(p * price, 100)
    value = price + delta if up else price - delta
    verb = "rises" if up else "is reduced"
    question = f"A {item} costs {price} dollars. Its price {verb} by {p}%. What is the new price?"
    op, bad_op = ("+", "-") if up else ("-", "+")
    first = f"{p}% of {price} = {p}/100 × {price} = {fmt(delta)}"
    steps = [first, f"{price} {op} {fmt(delta)} = {fmt(value)}"]
    bad = price - delta if up else price + delta
    mistakes = [
        Mistake(
            "sign", (first, f"{price} {bad_op} {fmt(delta)} = {fmt(bad)}"), f"{fmt(bad)} dollars"
        ),
        Mistake("method", (first,), f"{fmt(delta)} dollars"),
    ]
    return f"chg:{price}:{p}:{up}", question, value, "dollars", None, steps, mistakes


def _what_percent(rng):
    whole = rng.choice([20, 25, 40, 50, 80, 200, 400, 500]) * rng.randint(1, 3)
    part = Fraction(whole * rng.randint(1, 19), 20)
    if part.denominator != 1:
        part = Fraction(round(part))
    part = int(part)
    value = Fraction(part * 100, whole)
    q = rng.choice(
        [f"What percent of {whole} is {part}?", f"{part} is what percentage of {whole}?"]
    )
    rounding = "" if (value * 100).denominator == 1 else " Give the answer to 2 decimal places."
    places = 2 if rounding else None
    steps = [
        f"Divide the part by the whole: {part} ÷ {whole} = {fmt(Fraction(part, whole), 4 if rounding else None)}",
        f"Multiply by 100: {fmt(value, places)}%",
    ]
    inv = Fraction(whole * 100, part)
    mistakes = [
        Mistake(
            "method",
            (f"Divide: {whole} ÷ {part}, then multiply by 100.", f"{fmt(inv, 2)}%"),
            f"{fmt(inv, 2)}%",
        ),
        Mistake("unit", (steps[0],), fmt(Fraction(part, whole), 4 if rounding else None)),
    ]
    return f"pct:{part}:{whole}", q + rounding, value, "%", places, steps, mistakes


def _percent_change(rng):
    old = rng.randint(4, 80) * 5
    new = old + rng.choice([-1, 1]) * rng.randint(1, old // 2)
    diff = new - old
    value = Fraction(abs(diff) * 100, old)
    word = "increase" if diff > 0 else "decrease"
    rounding = "" if (value * 100).denominator == 1 else " Give the answer to 2 decimal places."
    places = 2 if rounding else None
    thing = rng.choice(
        ["A town's population", "The number of visitors", "A score", "A shop's sales"]
    )
    question = f"{thing} changes from {old} to {new}. What is the percentage {word}?{rounding}"
    steps = [
        f"Change = {new} - {old} = {diff}",
        f"Percentage {word} = {abs(diff)} ÷ {old} × 100 = {fmt(value, places)}%",
    ]
    wrong = Fraction(abs(diff) * 100, new)
    mistakes = [
        Mistake(
            "method",
            (steps[0], f"Percentage {word} = {abs(diff)} ÷ {new} × 100 = {fmt(wrong, 2)}%"),
            f"{fmt(wrong, 2)}%",
        ),
    ]
    return f"pchg:{old}:{new}", question, value, "%", places, steps, mistakes


def _share(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if a == b or gcd(a, b) != 1:
        a, b = 2, 3 if rng.random() < 0.5 else 5
    unit = rng.randint(2, 30)
    total = unit * (a + b)
    p1, p2 = PEOPLE[rng.randrange(len(PEOPLE))]
    larger = a > b
    who = p1 if larger else p2
    question = (
        f"{p1} and {p2} share {total} sweets in the ratio {a}:{b}. How many sweets does {who} get?"
    )
    mine = a if larger else b
    value = unit * mine
    steps = [
        f"Total parts: {a} + {b} = {a + b}",
        f"One part: {total} ÷ {a + b} = {unit}",
        f"{who} gets {mine} × {unit} = {value}",
    ]
    bad = Fraction(total, mine)
    mistakes = [
        Mistake(
            "arithmetic",
            (
                steps[0],
                f"One part: {total} ÷ {a + b} = {unit + 1}",
                f"{who} gets {mine} × {unit + 1} = {value + mine}",
            ),
            str(value + mine),
        ),
        Mistake("method", (f"{who} gets {total} ÷ {mine} = {fmt(bad, 2)}",), fmt(bad, 2)),
    ]
    return f"share:{total}:{a}:{b}", question, value, "", None, steps, mistakes


def _simplify(rng):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    g = gcd(a, b)
    a, b = a // g, b // g
    if a == b:
        a, b = 3, 4
    k = rng.randint(2, 12)
    x, y = a * k, b * k
    question = rng.choice([f"Simplify the ratio {x}:{y}.", f"Write {x}:{y} in its simplest form."])
    steps = [
        f"The highest common factor of {x} and {y} is {k}.",
        f"{x} ÷ {k} = {a} and {y} ÷ {k} = {b}",
    ]
    mistakes = []
    small = next((d for d in range(2, k) if k % d == 0), None)
    if small:
        mistakes.append(
            Mistake(
                "method",
                (
                    f"Divide both by {small}.",
                    f"{x} ÷ {small} = {x // small} and {y} ÷ {small} = {y // small}",
                ),
                f"{x // small}:{y // small}",
            )
        )
    mistakes.append(
        Mistake(
            "arithmetic", steps[:1] + [f"{x} ÷ {k} = {a} and {y} ÷ {k} = {b + 1}"], f"{a}:{b + 1}"
        )
    )
    return f"ratio:{x}:{y}", question, f"{a}:{b}", "", None, steps, mistakes


SUBTYPES = {
    "of": (_percent_of, 3),
    "change": (_change, 2),
    "what_percent": (_what_percent, 2),
    "percent_change": (_percent_change, 2),
    "share": (_share, 2),
    "simplify": (_simplify, 1),
}


def make(rng) -> Problem:
    kind = pick(rng, {k: w for k, (_, w) in SUBTYPES.items()})
    key, question, value, unit, places, steps, mistakes = SUBTYPES[kind][0](rng)
    mistakes = [Mistake(m.kind, tuple(m.steps), m.answer) for m in mistakes]
    if isinstance(value, str):  # a ratio a:b
        answer = value
        a, b = (int(t) for t in value.split(":"))
        near = [f"{b}:{a}", f"{a + 1}:{b}", f"{a}:{b + 2}"]
    else:
        answer = with_unit(fmt(value, places), unit)
        step = Fraction(1, 10**places) if places else 1
        near = [with_unit(fmt(x, places), unit) for x in (value + step, value - step, value * 2)]
    return Problem(
        family=FAMILY,
        key=f"{kind}:{key}",
        question=question,
        value=Fraction(*map(int, value.split(":"))) if isinstance(value, str) else value,
        answer=answer,
        steps=tuple(steps),
        unit=unit,
        mistakes=tuple(m for m in mistakes if m.answer != answer),
        distractors=tuple(near),
    )
