"""Linear equations in one unknown with an integer solution, solved by inverse operations."""

from __future__ import annotations

from fractions import Fraction

from zephyr.data.synth.problem import Mistake, Problem, frac, pick

FAMILY = "linear_equation"

TEMPLATES = ("Solve for {v}: {eq}", "Find {v} if {eq}.", "Solve the equation {eq}.")


def _term(a: int, v: str) -> str:
    return f"{v}" if a == 1 else f"{a}{v}"


def _plus(b: int) -> str:
    return f"+ {b}" if b >= 0 else f"- {-b}"


def _divide(v: str, a: int, rhs: int) -> tuple[str, Fraction]:
    x = Fraction(rhs, a)
    return f"Divide both sides by {a}: {v} = {rhs} ÷ {a} = {frac(x)}", x


def make(rng) -> Problem:
    form = pick(rng, {"ax+b": 4, "a(x+b)": 2, "b-ax": 2, "both": 2})
    v = rng.choice("xxxyn")
    x = rng.randint(-9, 15)
    mistakes: list[Mistake] = []
    both = None  # the common value of both sides, when both hold the unknown
    if form == "ax+b":
        a, b = rng.randint(2, 9), rng.choice([-1, 1]) * rng.randint(1, 30)
        c = a * x + b
        eq = f"{_term(a, v)} {_plus(b)} = {c}"
        undo = f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"
        rhs = c - b
        step, _ = _divide(v, a, rhs)
        steps = [f"{undo}: {_term(a, v)} = {rhs}.", step]
        # sign error: moving b across without changing its sign
        bad = c + b
        bad_step, bad_x = _divide(v, a, bad)
        mistakes.append(
            Mistake(
                "sign", (f"Move {abs(b)} across: {_term(a, v)} = {bad}.", bad_step), frac(bad_x)
            )
        )
        slip = rhs + rng.choice([-10, 10])
        slip_step, slip_x = _divide(v, a, slip)
        mistakes.append(
            Mistake("arithmetic", (f"{undo}: {_term(a, v)} = {slip}.", slip_step), frac(slip_x))
        )
        key = f"{a}:{b}:{c}"
    elif form == "a(x+b)":
        a, b = rng.randint(2, 9), rng.choice([-1, 1]) * rng.randint(1, 12)
        c = a * (x + b)
        eq = f"{a}({v} {_plus(b)}) = {c}"
        k = c // a
        undo = f"Subtract {b}" if b > 0 else f"Add {-b}"
        steps = [f"Divide both sides by {a}: {v} {_plus(b)} = {k}.", f"{undo}: {v} = {k - b}."]
        mistakes.append(
            Mistake("sign", (steps[0], f"Move {abs(b)} across: {v} = {k + b}."), str(k + b))
        )
        # expanding the bracket wrongly: a·x + b instead of a·x + a·b
        wrong = Fraction(c - b, a)
        mistakes.append(
            Mistake(
                "method",
                (f"Expand: {_term(a, v)} {_plus(b)} = {c}.", _divide(v, a, c - b)[0]),
                frac(wrong),
            )
        )
        key = f"{a}({b})={c}"
    elif form == "b-ax":
        a, b = rng.randint(2, 9), rng.randint(5, 40)
        c = b - a * x
        eq = f"{b} - {_term(a, v)} = {c}"
        rhs = c - b
        steps = [
            f"Subtract {b} from both sides: -{_term(a, v)} = {rhs}.",
            f"Divide both sides by -{a}: {v} = {rhs} ÷ -{a} = {x}",
        ]
        mistakes.append(
            Mistake(
                "sign",
                (
                    f"Subtract {b} from both sides: {_term(a, v)} = {rhs}.",
                    f"{v} = {rhs} ÷ {a} = {-x}",
                ),
                str(-x),
            )
        )
        key = f"{b}-{a}={c}"
    else:
        d = rng.randint(1, 7)
        a = d + rng.randint(1, 6)
        b = rng.choice([-1, 1]) * rng.randint(1, 20)
        e = (a - d) * x + b
        eq = f"{_term(a, v)} {_plus(b)} = {_term(d, v)} {_plus(e)}"
        rhs = e - b
        undo = f"Subtract {b}" if b > 0 else f"Add {-b}"
        step = _divide(v, a - d, rhs)[0] if a - d > 1 else f"So {v} = {rhs}."
        steps = [
            f"Subtract {_term(d, v)} from both sides: {_term(a - d, v)} {_plus(b)} = {e}.",
            f"{undo}: {_term(a - d, v)} = {rhs}.",
            step,
        ]
        # collecting the unknowns with the wrong sign: (a + d)x
        bad = Fraction(rhs, a + d)
        mistakes.append(
            Mistake(
                "sign",
                (
                    f"Move {_term(d, v)} across: {_term(a + d, v)} {_plus(b)} = {e}.",
                    f"{undo}: {_term(a + d, v)} = {rhs}.",
                    _divide(v, a + d, rhs)[0],
                ),
                frac(bad),
            )
        )
        key = f"{a}:{b}={d}:{e}"
        both = a * x + b
    answer = str(x)
    distractors = tuple(str(x + s) for s in (1, -1, 2)) + (str(-x),)
    return Problem(
        family=FAMILY,
        key=f"{form}:{key}",
        question=rng.choice(TEMPLATES).format(v=v, eq=eq),
        value=x,
        answer=answer,
        steps=(*steps, f"Check: {_check(eq, v, x, both)}"),
        mistakes=tuple(m for m in mistakes if m.answer != answer),
        distractors=distractors,
    )


def _check(eq: str, v: str, x: int, both: int | None = None) -> str:
    """The equation with the solution substituted: '3(5) + 7 = 22', or both sides' common value."""
    left, right = eq.split(" = ")
    if both is not None:
        return f"{_sub(left, v, x)} = {both} and {_sub(right, v, x)} = {both}"
    return f"{_sub(left, v, x)} = {right}"


def _sub(side: str, v: str, x: int) -> str:
    out = []
    for i, ch in enumerate(side):
        if ch == v:
            out.append(f"({x})" if i and side[i - 1].isdigit() else str(x))
        else:
            out.append(ch)
    return "".join(out)
