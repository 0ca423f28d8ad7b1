"""Constant-acceleration kinematics: v = u + at, s = ut + ½at², v² = u² + 2as, speed = d / t."""

from __future__ import annotations

from decimal import Context, Decimal
from fractions import Fraction

from zephyr.data.synth.problem import Mistake, Problem, fmt, pick, with_unit

FAMILY = "kinematics"

MOVERS = ("A car", "A cyclist", "A train", "A runner", "A cart", "A boat")


def _final_speed(rng):
    who, u, a, t = rng.choice(MOVERS), rng.randint(0, 20), rng.randint(1, 6), rng.randint(2, 12)
    verb = rng.choice(["accelerates", "speeds up"])
    ask = rng.choice(["What is its final speed?", "Find its speed at the end."])
    if u == 0:
        question = f"{who} starts from rest and {verb} at {a} m/s² for {t} s. {ask}"
    else:
        question = f"{who} moving at {u} m/s {verb} at {a} m/s² for {t} s. {ask}"
    v = u + a * t
    rule = "Use v = u + at."
    steps = [rule, f"v = {u} + {a} × {t} = {u} + {a * t} = {v}"]
    mistakes = [
        Mistake(
            "arithmetic",
            (rule, f"v = {u} + {a} × {t} = {u} + {a * t + 10} = {v + 10}"),
            f"{v + 10} m/s",
        ),
        Mistake("unit", (rule, f"v = {u} + {a} × {t} = {v}"), f"{v} m"),
    ]
    if u:
        mistakes.append(
            Mistake("method", ("Use v = at.", f"v = {a} × {t} = {a * t}"), f"{a * t} m/s")
        )
    return f"v:{u}:{a}:{t}", question, v, "m/s", None, steps, mistakes


def _braking(rng):
    who, a, t = rng.choice(MOVERS), rng.randint(1, 5), rng.randint(2, 6)
    u = a * t + rng.randint(1, 20)
    question = rng.choice(
        [
            f"{who} moving at {u} m/s brakes, slowing down at {a} m/s² for {t} s. What is its speed then?",
            f"{who} travelling at {u} m/s decelerates at {a} m/s² for {t} s. Find its final speed.",
        ]
    )
    v = u - a * t
    rule = f"Slowing down means a = -{a} m/s². Use v = u + at."
    steps = [rule, f"v = {u} - {a} × {t} = {u} - {a * t} = {v}"]
    bad = u + a * t
    mistakes = [
        Mistake(
            "sign",
            ("Use v = u + at.", f"v = {u} + {a} × {t} = {u} + {a * t} = {bad}"),
            f"{bad} m/s",
        ),
        Mistake(
            "arithmetic",
            (rule, f"v = {u} - {a} × {t} = {u} - {a * t + 1} = {v - 1}"),
            f"{v - 1} m/s",
        ),
    ]
    return f"brake:{u}:{a}:{t}", question, v, "m/s", None, steps, mistakes


def _distance(rng):
    who, u, a, t = rng.choice(MOVERS), rng.randint(0, 12), 2 * rng.randint(1, 4), rng.randint(2, 10)
    if rng.random() < 0.3:
        a = rng.randint(1, 7)
        t = 2 * rng.randint(1, 5)  # keeps ½at² whole
    start = "starts from rest and accelerates" if u == 0 else f"moving at {u} m/s accelerates"
    question = f"{who} {start} at {a} m/s² for {t} s. How far does it travel in that time?"
    half = Fraction(a * t * t, 2)
    s = u * t + half
    rule = "Use s = ut + ½at²."
    steps = [rule, f"s = {u} × {t} + ½ × {a} × {t}² = {u * t} + {fmt(half)} = {fmt(s)}"]
    no_half = u * t + a * t * t
    mistakes = [
        Mistake(
            "method",
            (
                "Use s = ut + at².",
                f"s = {u} × {t} + {a} × {t}² = {u * t} + {a * t * t} = {no_half}",
            ),
            f"{no_half} m",
        ),
        Mistake("unit", (rule, steps[1]), f"{fmt(s)} m/s"),
        Mistake(
            "arithmetic",
            (rule, f"s = {u} × {t} + ½ × {a} × {t}² = {u * t} + {fmt(half + 10)} = {fmt(s + 10)}"),
            f"{fmt(s + 10)} m",
        ),
    ]
    return f"s:{u}:{a}:{t}", question, s, "m", None, steps, mistakes


def _average(rng):
    who, t = rng.choice(MOVERS), rng.randint(2, 8)
    unit, tu, du = ("km/h", "h", "km") if rng.random() < 0.5 else ("m/s", "s", "m")
    v = rng.randint(5, 120) if unit == "km/h" else rng.randint(2, 40)
    d = v * t
    question = rng.choice(
        [
            f"{who} travels {d} {du} in {t} {tu}. What is its average speed?",
            f"Find the average speed of {who.lower()} that covers {d} {du} in {t} {tu}.",
        ]
    )
    rule = "Average speed = distance ÷ time."
    steps = [rule, f"speed = {d} ÷ {t} = {v}"]
    mistakes = [
        Mistake("arithmetic", (rule, f"speed = {d} ÷ {t} = {v + 1}"), f"{v + 1} {unit}"),
        Mistake(
            "unit", (rule, f"speed = {d} ÷ {t} = {v}"), f"{v} {'m/s' if unit == 'km/h' else 'km/h'}"
        ),
        Mistake(
            "method",
            ("Average speed = distance × time.", f"speed = {d} × {t} = {d * t}"),
            f"{d * t} {unit}",
        ),
    ]
    return f"avg:{d}{du}:{t}", question, v, unit, None, steps, mistakes


def _time(rng):
    who, v, t = rng.choice(MOVERS), rng.randint(2, 30), rng.randint(3, 40)
    d = v * t
    question = rng.choice(
        [
            f"How long does {who.lower()} moving at {v} m/s take to cover {d} m?",
            f"{who} moves at a steady {v} m/s. How many seconds does it take to travel {d} m?",
        ]
    )
    rule = "Time = distance ÷ speed."
    steps = [rule, f"t = {d} ÷ {v} = {t}"]
    mistakes = [
        Mistake("method", ("Time = distance × speed.", f"t = {d} × {v} = {d * v}"), f"{d * v} s"),
        Mistake("arithmetic", (rule, f"t = {d} ÷ {v} = {t + 1}"), f"{t + 1} s"),
        Mistake("unit", (rule, f"t = {d} ÷ {v} = {t}"), f"{t} m/s"),
    ]
    return f"t:{d}:{v}", question, t, "s", None, steps, mistakes


def _fall(rng):
    # v² = u² + 2as from rest; a square root, so the question states the rounding
    h = rng.randint(2, 80)
    g = rng.choice([Decimal("9.8"), Decimal("9.81"), Decimal("10")])
    question = rng.choice(
        [
            f"A stone is dropped from rest and falls {h} m. Taking g = {g} m/s², find its speed just before it lands, to 2 decimal places.",
            f"An object falls {h} m from rest with acceleration {g} m/s². What is its final speed, to 2 decimal places?",
        ]
    )
    sq = 2 * g * h
    v = sq.sqrt(Context(prec=40))
    approx = "=" if Fraction(v) ** 2 == Fraction(sq) else "≈"
    rule = "Use v² = u² + 2as with u = 0."
    steps = [rule, f"v² = 2 × {g} × {h} = {sq:f}", f"v = √{sq:f} {approx} {fmt(v, 2)}"]
    mistakes = [
        Mistake("method", (rule, f"v = 2 × {g} × {h} = {sq:f}"), f"{fmt(sq, 2)} m/s"),
        Mistake(
            "arithmetic",
            (rule, f"v² = 2 × {g} × {h} = {sq:f}", f"v = √{sq:f} ≈ {fmt(v + 1, 2)}"),
            f"{fmt(v + 1, 2)} m/s",
        ),
    ]
    return f"fall:{h}:{g}", question, v, "m/s", 2, steps, mistakes


SUBTYPES = {
    "final_speed": (_final_speed, 3),
    "braking": (_braking, 2),
    "distance": (_distance, 3),
    "average": (_average, 3),
    "time": (_time, 2),
    "fall": (_fall, 1),
}


def make(rng) -> Problem:
    kind = pick(rng, {k: w for k, (_, w) in SUBTYPES.items()})
    key, question, value, unit, places, steps, mistakes = SUBTYPES[kind][0](rng)
    answer = with_unit(fmt(value, places), unit)
    near = [value + 1, value - 1, value * 2]
    return Problem(
        family=FAMILY,
        key=f"{kind}:{key}",
        question=question,
        value=value,
        answer=answer,
        steps=tuple(steps),
        unit=unit,
        mistakes=tuple(m for m in mistakes if m.answer != answer),
        distractors=tuple(with_unit(fmt(x, places), unit) for x in near),
    )
