"""Probability by counting: marbles (one or two draws), dice, coins, and complements."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import comb

from zephyr.data.synth.problem import Mistake, Problem, fmt, frac, pick

FAMILY = "probability"

COLOURS = ("red", "blue", "green", "yellow", "white", "black")
LOWEST = " Give the answer as a fraction in lowest terms."


def _show(num: int, den: int) -> str:
    """'6/36 = 1/6', or just '3/8' when already in lowest terms."""
    low = frac(Fraction(num, den))
    return f"{num}/{den}" if low == f"{num}/{den}" else f"{num}/{den} = {low}"


def _one_draw(rng):
    c1, c2, c3 = rng.sample(COLOURS, 3)
    r, b = rng.randint(1, 30), rng.randint(1, 30)
    g = rng.randint(1, 20) if rng.random() < 0.5 else 0
    total = r + b + g
    bag = f"{r} {c1}, {b} {c2} and {g} {c3}" if g else f"{r} {c1} and {b} {c2}"
    question = f"A bag has {bag} marbles. One marble is picked at random. What is the probability that it is {c1}?{LOWEST}"
    counts = f"{r} + {b} + {g}" if g else f"{r} + {b}"
    steps = [
        f"There are {counts} = {total} marbles, and {r} are {c1}.",
        f"P({c1}) = {_show(r, total)}",
    ]
    value = Fraction(r, total)
    mistakes = [
        Mistake(
            "method",
            (
                f"Compare {c1} with the others: {r} to {total - r}.",
                f"P({c1}) = {_show(r, total - r)}",
            ),
            frac(Fraction(r, total - r)),
        ),
        Mistake(
            "arithmetic",
            (
                f"There are {counts} = {total + 1} marbles, and {r} are {c1}.",
                f"P({c1}) = {_show(r, total + 1)}",
            ),
            frac(Fraction(r, total + 1)),
        ),
    ]
    return f"one:{r}:{b}:{g}", question, value, steps, mistakes


def _two_draws(rng):
    c1, c2 = rng.sample(COLOURS, 2)
    r, b = rng.randint(2, 15), rng.randint(1, 15)
    total = r + b
    question = (
        f"A bag has {r} {c1} and {b} {c2} marbles. Two marbles are drawn without replacement. "
        f"What is the probability that both are {c1}?{LOWEST}"
    )
    value = Fraction(r * (r - 1), total * (total - 1))
    num, den = r * (r - 1), total * (total - 1)
    steps = [
        f"P(first {c1}) = {r}/{total}",
        f"P(second {c1}) = {r - 1}/{total - 1}",
        f"P(both) = {r}/{total} × {r - 1}/{total - 1} = {_show(num, den)}",
    ]
    repl = Fraction(r * r, total * total)
    mistakes = [
        Mistake(
            "method",
            (
                f"P({c1}) = {r}/{total} each time.",
                f"P(both) = {r}/{total} × {r}/{total} = {_show(r * r, total * total)}",
            ),
            frac(repl),
        ),
        Mistake(
            "method",
            (
                f"P(first {c1}) = {r}/{total}",
                f"P(both) = {r}/{total} + {r - 1}/{total - 1} = {frac(Fraction(r, total) + Fraction(r - 1, total - 1))}",
            ),
            frac(Fraction(r, total) + Fraction(r - 1, total - 1)),
        ),
        Mistake(
            "arithmetic",
            (*steps[:2], f"P(both) = {r}/{total} × {r - 1}/{total - 1} = {_show(num, den + 10)}"),
            frac(Fraction(num, den + 10)),
        ),
    ]
    return f"two:{r}:{b}", question, value, steps, mistakes


def _dice(rng):
    if rng.random() < 0.4:
        k = rng.randint(1, 5)
        question = f"A fair six-sided die is rolled. What is the probability of getting a number greater than {k}?{LOWEST}"
        good = list(range(k + 1, 7))
        steps = [
            f"Numbers greater than {k}: {', '.join(map(str, good))}, that is {len(good)} of 6.",
            f"P = {_show(len(good), 6)}",
        ]
        value = Fraction(len(good), 6)
        mistakes = [
            Mistake(
                "method",
                (f"Numbers from {k} up: {6 - k + 1} of 6.", f"P = {_show(6 - k + 1, 6)}"),
                frac(Fraction(7 - k, 6)),
            ),
        ]
        return f"die:{k}", question, value, steps, mistakes
    total = rng.randint(3, 11)
    pairs = [(a, total - a) for a in range(1, 7) if 1 <= total - a <= 6]
    question = rng.choice(
        [
            f"Two fair dice are rolled. What is the probability that the total is {total}?{LOWEST}",
            f"Two fair six-sided dice are thrown. Find the probability that their sum is {total}.{LOWEST}",
        ]
    )
    shown = ", ".join(f"({a},{b})" for a, b in pairs)
    steps = [
        "There are 6 × 6 = 36 equally likely outcomes.",
        f"A total of {total}: {shown}, that is {len(pairs)} outcomes.",
        f"P = {_show(len(pairs), 36)}",
    ]
    value = Fraction(len(pairs), 36)
    unordered = len({tuple(sorted(p)) for p in pairs})
    mistakes = [
        Mistake("method", ("There are 11 possible totals from 2 to 12.", "P = 1/11"), "1/11"),
        Mistake(
            "arithmetic",
            steps[:1]
            + [
                f"A total of {total}: {len(pairs) + 1} outcomes.",
                f"P = {_show(len(pairs) + 1, 36)}",
            ],
            frac(Fraction(len(pairs) + 1, 36)),
        ),
    ]
    if unordered != len(pairs):  # counting (1,6) and (6,1) once
        mistakes.append(
            Mistake(
                "method",
                (
                    "There are 36 outcomes.",
                    f"Pairs that make {total}: {unordered}.",
                    f"P = {_show(unordered, 36)}",
                ),
                frac(Fraction(unordered, 36)),
            )
        )
    return f"dice:{total}", question, value, steps, mistakes


def _coins(rng):
    n = rng.randint(2, 5)
    k = rng.randint(0, n)
    side = rng.choice(["heads", "tails"])
    side = side[:-1] if k == 1 else side  # "1 tail"
    question = f"A fair coin is tossed {n} times. What is the probability of getting exactly {k} {side}?{LOWEST}"
    ways = comb(n, k)
    steps = [
        f"There are 2^{n} = {2**n} equally likely outcomes.",
        f"Ways to get exactly {k} {side}: C({n},{k}) = {ways}",
        f"P = {_show(ways, 2**n)}",
    ]
    value = Fraction(ways, 2**n)
    mistakes = [
        Mistake(
            "method",
            (f"There are {n + 1} possible numbers of {side}.", f"P = 1/{n + 1}"),
            f"1/{n + 1}",
        ),
        Mistake(
            "arithmetic",
            (
                f"There are 2 × {n} = {2 * n} outcomes.",
                f"Ways to get exactly {k} {side}: C({n},{k}) = {ways}",
                f"P = {_show(ways, 2 * n)}",
            ),
            frac(Fraction(ways, 2 * n)),
        ),
    ]
    return f"coin:{n}:{k}:{side}", question, value, steps, mistakes


def _multiple(rng):
    top, k = rng.randint(10, 60), rng.randint(2, 9)
    count = top // k
    question = (
        f"A whole number from 1 to {top} is chosen at random. What is the probability that it is "
        f"a multiple of {k}?{LOWEST}"
    )
    rest = f" remainder {top % k}" if top % k else ""
    steps = [
        f"Multiples of {k} up to {top}: {top} ÷ {k} = {count}{rest}, so {count} numbers.",
        f"P = {_show(count, top)}",
    ]
    value = Fraction(count, top)
    mistakes = [
        Mistake("method", (f"One number in {k} is a multiple of {k}.", f"P = 1/{k}"), f"1/{k}"),
        Mistake(
            "arithmetic",
            (f"Multiples of {k} up to {top}: {count + 1} numbers.", f"P = {_show(count + 1, top)}"),
            frac(Fraction(count + 1, top)),
        ),
    ]
    return f"mult:{top}:{k}", question, value, steps, mistakes


def _complement(rng):
    p = Decimal(rng.randint(1, 99)) / 100
    event = rng.choice(
        [
            "it rains tomorrow",
            "a bus is late",
            "a seed sprouts",
            "a light bulb fails this year",
            "a team wins its next game",
        ]
    )
    question = (
        f"The probability that {event} is {p}. What is the probability that this does not happen?"
    )
    value = 1 - p
    steps = [
        "The probabilities of an event and its complement add up to 1.",
        f"P(not) = 1 - {p} = {value}",
    ]
    mistakes = [
        Mistake(
            "method", ("The event and its complement are equally likely.", f"P(not) = {p}"), fmt(p)
        ),
        Mistake(
            "arithmetic",
            steps[:1] + [f"P(not) = 1 - {p} = {fmt(value + Decimal('0.1'))}"],
            fmt(value + Decimal("0.1")),
        ),
    ]
    return f"not:{p}", question, Fraction(value), steps, mistakes


SUBTYPES = {
    "one_draw": (_one_draw, 3),
    "two_draws": (_two_draws, 2),
    "dice": (_dice, 2),
    "coins": (_coins, 2),
    "multiple": (_multiple, 2),
    "complement": (_complement, 1),
}


def make(rng) -> Problem:
    kind = pick(rng, {k: w for k, (_, w) in SUBTYPES.items()})
    key, question, value, steps, mistakes = SUBTYPES[kind][0](rng)
    decimal = kind == "complement"
    answer = fmt(value) if decimal else frac(value)
    near = [
        value / 2,
        value * 2 if value <= Fraction(1, 2) else 1 - value,
        Fraction(value.numerator, value.denominator + 1),
    ]
    return Problem(
        family=FAMILY,
        key=f"{kind}:{key}",
        question=question,
        value=value,
        answer=answer,
        steps=tuple(steps),
        mistakes=tuple(
            Mistake(m.kind, tuple(m.steps), m.answer) for m in mistakes if m.answer != answer
        ),
        distractors=tuple(fmt(x, 2) if decimal else frac(x) for x in near),
    )
