"""One-step unit conversions (length, mass, volume, time, speed, temperature)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from zephyr.data.synth.problem import Mistake, Problem, fmt, with_unit

FAMILY = "unit_conversion"

# (from, to, factor, plural name of `to`, how values are drawn); to = from × factor
CONVERSIONS = [
    ("km", "m", 1000, "metres", "small"),
    ("m", "cm", 100, "centimetres", "small"),
    ("cm", "mm", 10, "millimetres", "small"),
    ("m", "km", Fraction(1, 1000), "kilometres", "large"),
    ("cm", "m", Fraction(1, 100), "metres", "large"),
    ("mm", "cm", Fraction(1, 10), "centimetres", "large"),
    ("kg", "g", 1000, "grams", "small"),
    ("g", "kg", Fraction(1, 1000), "kilograms", "large"),
    ("g", "mg", 1000, "milligrams", "small"),
    ("L", "mL", 1000, "millilitres", "small"),
    ("mL", "L", Fraction(1, 1000), "litres", "large"),
    ("h", "min", 60, "minutes", "halves"),
    ("min", "s", 60, "seconds", "halves"),
    ("min", "h", Fraction(1, 60), "hours", "fifteens"),
    ("s", "min", Fraction(1, 60), "minutes", "thirties"),
    ("km/h", "m/s", Fraction(5, 18), "", "speed"),
    ("m/s", "km/h", Fraction(18, 5), "", "halves"),
    ("°C", "K", None, "", "celsius"),
    ("K", "°C", None, "", "kelvin"),
]
# a wrong factor a student confuses with the right one (1 h = 100 min, 1 km = 100 m)
CONFUSED = {1000: 100, 100: 1000, 10: 100, 60: 100}
OFFSET = Decimal("273.15")


def _value(rng, how: str) -> Decimal:
    if how == "small":
        return (
            Decimal(rng.randint(1, 99)) if rng.random() < 0.6 else Decimal(rng.randint(1, 999)) / 10
        )
    if how == "large":
        return Decimal(rng.randint(5, 9999))
    if how == "halves":
        return Decimal(rng.randint(1, 60)) / 2
    if how == "fifteens":
        return Decimal(15 * rng.randint(1, 40))
    if how == "thirties":
        return Decimal(30 * rng.randint(1, 40))
    if how == "speed":
        return Decimal(rng.randint(5, 150))
    if how == "celsius":
        return Decimal(rng.randint(-40, 150))
    return Decimal(rng.randint(200, 450))


def make(rng) -> Problem:
    u1, u2, factor, name, how = rng.choice(CONVERSIONS)
    v = _value(rng, how)
    places = 2 if u1 == "km/h" else None
    rounding = " Give the answer to 2 decimal places." if places else ""
    templates = ["Convert {v} {u1} to {u2}.", "Express {v} {u1} in {u2}."]
    if name:
        templates.append("How many {name} are there in {v} {u1}?")
    question = rng.choice(templates).format(v=v, u1=u1, u2=u2, name=name) + rounding

    def ans(x) -> str:
        return with_unit(fmt(x, places), u2)

    mistakes = []
    if factor is None:  # temperature: an offset, not a factor
        sign = 1 if u1 == "°C" else -1
        value = v + sign * OFFSET
        rule = "K = °C + 273.15" if sign > 0 else "°C = K - 273.15"
        op, bad_op = ("+", "-") if sign > 0 else ("-", "+")
        steps = [rule, f"{v} {op} 273.15 = {fmt(value)}"]
        bad = v - sign * OFFSET
        mistakes.append(Mistake("sign", (rule, f"{v} {bad_op} 273.15 = {fmt(bad)}"), ans(bad)))
    elif u1 == "km/h":
        value = Fraction(v) * factor
        approx = "=" if (value * 100).denominator == 1 else "≈"
        rule = "1 km/h = 1000 m ÷ 3600 s, so multiply by 1000 and divide by 3600."
        steps = [rule, f"{v} × 1000 ÷ 3600 {approx} {fmt(value, 2)}"]
        bad = Fraction(v) * Fraction(18, 5)
        mistakes.append(
            Mistake("unit", ("Multiply by 3.6.", f"{v} × 3.6 = {fmt(bad, 2)}"), ans(bad))
        )
        slip = value * 10
        mistakes.append(
            Mistake("arithmetic", (rule, f"{v} × 1000 ÷ 3600 ≈ {fmt(slip, 2)}"), ans(slip))
        )
    else:
        f = Fraction(factor)
        value = Fraction(v) * f
        if f >= 1:
            k = f if u1 != "m/s" else Decimal("3.6")
            rule = f"1 {u1} = {fmt(k)} {u2}, so multiply by {fmt(k)}."
            line = f"{v} × {fmt(k)} = {{}}"
            bad_rule, bad_line = f"Divide by {fmt(k)}.", f"{v} ÷ {fmt(k)} = {{}}"
        else:
            k = 1 / f
            rule = f"1 {u2} = {fmt(k)} {u1}, so divide by {fmt(k)}."
            line = f"{v} ÷ {fmt(k)} = {{}}"
            bad_rule, bad_line = f"Multiply by {fmt(k)}.", f"{v} × {fmt(k)} = {{}}"
        steps = [rule, line.format(fmt(value))]
        # the wrong direction: multiplying where one should divide (or the reverse)
        bad = Fraction(v) / f
        if _short(bad):
            mistakes.append(Mistake("unit", (bad_rule, bad_line.format(fmt(bad))), ans(bad)))
        # a misplaced decimal point
        slip = value * 10 if rng.random() < 0.5 else value / 10
        mistakes.append(Mistake("arithmetic", (rule, line.format(fmt(slip))), ans(slip)))
        wrong_k = CONFUSED.get(int(k)) if k == int(k) else None
        if wrong_k:
            conf = Fraction(v) * (wrong_k if f >= 1 else Fraction(1, wrong_k))
            wrong_rule = rule.replace(f"{fmt(k)}", f"{wrong_k}")
            wrong_line = line.replace(f"{fmt(k)}", f"{wrong_k}").format(fmt(conf))
            mistakes.append(Mistake("method", (wrong_rule, wrong_line), ans(conf)))
    answer = ans(value)
    return Problem(
        family=FAMILY,
        key=f"{u1}>{u2}:{v}",
        question=question,
        value=value,
        answer=answer,
        steps=tuple(steps),
        unit=u2,
        mistakes=tuple(m for m in mistakes if m.answer != answer),
        # the right number with the starting unit is a classic distractor
        distractors=(with_unit(fmt(value, places), u1), ans(value * 100), ans(value / 100)),
    )


def _short(x: Fraction) -> bool:
    """Whether x has a terminating decimal of at most 8 places (else a distractor, not a step)."""
    return (x * 10**8).denominator == 1
