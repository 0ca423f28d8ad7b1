"""Multi-digit arithmetic: +, -, ×, ÷ worked by place value, the way a tutor splits numbers."""

from __future__ import annotations

from zephyr.data.synth.problem import Mistake, Problem, pick

FAMILY = "arithmetic"

TEMPLATES = ("What is {e}?", "Calculate {e}.", "Work out {e}.", "Find the value of {e}.")


def _places(n: int) -> list[int]:
    """347 -> [300, 40, 7] (zero places dropped, at least one part)."""
    digits = str(n)
    parts = [int(d) * 10 ** (len(digits) - i - 1) for i, d in enumerate(digits)]
    return [p for p in parts if p] or [0]


def _slip(rng, exclude: int) -> int:
    """A carry or borrow slip: off by 1, 10 or 100."""
    return rng.choice([d for d in (-100, -10, -1, 1, 10, 100) if d != exclude])


def _add(rng, a: int, b: int) -> tuple[int, list[str], list[Mistake]]:
    width = max(len(str(a)), len(str(b)))
    cols = []  # (a part, b part, sum) per place, largest place first
    for i in range(width - 1, -1, -1):
        x, y = (a // 10**i % 10) * 10**i, (b // 10**i % 10) * 10**i
        if x or y:
            cols.append((x, y, x + y))

    def steps(sums: list[int]) -> list[str]:
        split = " + ".join(f"({x} + {y})" for x, y, _ in cols)
        return [
            f"Split by place value: {a} + {b} = {split}",
            f"= {' + '.join(str(s) for s in sums)}",
            f"= {sum(sums)}",
        ]

    sums = [s for _, _, s in cols]
    wrong = list(sums)
    i = rng.randrange(len(wrong))
    wrong[i] += 10 ** (len(str(wrong[i])) - 1) * rng.choice([-1, 1]) if wrong[i] >= 10 else 10
    mistakes = [Mistake("arithmetic", tuple(steps(wrong)), str(sum(wrong)))]
    return a + b, steps(sums), mistakes


def _sub(rng, a: int, b: int) -> tuple[int, list[str], list[Mistake]]:
    big, small = max(a, b), min(a, b)

    def chain(parts: list[int], slip_at: int | None = None) -> tuple[list[str], int]:
        lines, cur = [], big
        for j, p in enumerate(parts):
            nxt = cur - p + (10 if j == slip_at else 0)
            lines.append(f"{cur} - {p} = {nxt}")
            cur = nxt
        return lines, cur

    parts = _places(small)
    lines, diff = chain(parts)
    head = f"Subtract {small} one place at a time."
    slip_lines, slipped = chain(parts, rng.randrange(len(parts)))
    if a >= b:
        good = [head, *lines]
        mistakes = [Mistake("arithmetic", (head, *slip_lines), str(slipped))]
        return diff, good, mistakes
    head = f"{b} is larger than {a}, so the answer is negative. Compute {b} - {a}."
    tail = f"So {a} - {b} = -{diff}"
    good = [head, *lines, tail]
    mistakes = [
        Mistake("sign", (f"Compute {b} - {a}.", *lines), str(diff)),
        Mistake("arithmetic", (head, *slip_lines, f"So {a} - {b} = -{slipped}"), str(-slipped)),
    ]
    return -diff, good, mistakes


def _mul(rng, a: int, b: int) -> tuple[int, list[str], list[Mistake]]:
    # split the multi-digit multiplier by place value; a one-digit one splits the other factor
    one_digit = b < 10
    big, small = (a, b) if one_digit else (b, a)
    parts = _places(big)

    def term(p: int) -> str:
        return f"{p} × {small}" if one_digit else f"{small} × {p}"

    def steps(ps: list[int]) -> list[str]:
        return [
            f"{a} × {b} = " + " + ".join(term(p) for p in parts),
            "= " + " + ".join(str(p) for p in ps),
            f"= {sum(ps)}",
        ]

    prods = [small * p for p in parts]
    slip = list(prods)
    i = rng.randrange(len(slip))
    slip[i] += rng.choice([-10, 10]) if slip[i] > 10 else 1
    mistakes = [Mistake("arithmetic", tuple(steps(slip)), str(sum(slip)))]
    # dropping the place value of a part: 47 × 2 instead of 47 × 20
    shift = [small * int(str(p)[0]) for p in parts]
    if shift != prods:
        mistakes.append(Mistake("method", tuple(steps(shift)), str(sum(shift))))
    return a * b, steps(prods), mistakes


def _div(rng, n: int, d: int, q: int) -> tuple[int, list[str], list[Mistake]]:
    k = 10 ** (len(str(q)) - 1)
    q1, q2 = q // k * k, q % k
    if q2 == 0 or q1 == 0:
        steps = [f"{n} ÷ {d} = {q}", f"Check: {q} × {d} = {n}"]
        off = q + _slip(rng, 0) if q > 100 else q + rng.choice([-1, 1])
        return q, steps, [Mistake("arithmetic", (f"{n} ÷ {d} = {off}",), str(off))]

    def steps(r1: int, r2: int) -> list[str]:
        return [
            f"Split {n} = {d * q1} + {d * q2}, both divisible by {d}.",
            f"{d * q1} ÷ {d} = {r1} and {d * q2} ÷ {d} = {r2}",
            f"{r1} + {r2} = {r1 + r2}",
        ]

    r2 = q2 + rng.choice([-1, 1]) if q2 > 1 else q2 + 1
    return q, steps(q1, q2), [Mistake("arithmetic", tuple(steps(q1, r2)), str(q1 + r2))]


def make(rng) -> Problem:
    op = pick(rng, {"add": 3, "sub": 3, "mul": 2.5, "div": 1.5})
    if op == "add":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        expr, (value, steps, mistakes) = f"{a} + {b}", _add(rng, a, b)
        key = f"add:{min(a, b)}:{max(a, b)}"
    elif op == "sub":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        if a == b:
            b += 1
        if rng.random() < 0.75 and a < b:  # mostly non-negative results; some negative ones
            a, b = b, a
        expr, (value, steps, mistakes) = f"{a} - {b}", _sub(rng, a, b)
        key = f"sub:{a}:{b}"
    elif op == "mul":
        a = rng.randint(12, 99) if rng.random() < 0.8 else rng.randint(101, 999)
        b = rng.randint(2, 9) if rng.random() < 0.5 else rng.randint(11, 99)
        expr, (value, steps, mistakes) = f"{a} × {b}", _mul(rng, a, b)
        key = f"mul:{min(a, b)}:{max(a, b)}"
    else:
        d = rng.randint(2, 9) if rng.random() < 0.7 else rng.randint(11, 25)
        q = rng.randint(12, 250)
        n = d * q
        expr, (value, steps, mistakes) = f"{n} ÷ {d}", _div(rng, n, d, q)
        key = f"div:{n}:{d}"
    question = rng.choice(TEMPLATES).format(e=expr)
    distractors = tuple(str(value + s) for s in (10, -10, 1, -1, 100))
    return Problem(
        family=FAMILY,
        key=key,
        question=question,
        value=value,
        answer=str(value),
        steps=tuple(steps),
        mistakes=tuple(m for m in mistakes if m.answer != str(value)),
        distractors=distractors,
    )
