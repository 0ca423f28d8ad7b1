"""One synthetic problem: question, computed answer, worked steps and typical mistakes.

Every family module has `make(rng) -> Problem`. Numbers are exact (int, Decimal, Fraction) so
an answer never carries float noise; rounding happens once, in `fmt`, half away from zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

# Error kinds of rejected solutions. "method" (a wrong formula) joins the brief's three, because
# it is the mistake a tutor sees most in conversions, molar mass and probability.
ERROR_KINDS = ("arithmetic", "unit", "sign", "method", "bare")

Number = int | Decimal | Fraction


@dataclass(frozen=True)
class Mistake:
    """A realistic wrong worked solution: its error kind, steps and (wrong) final answer."""

    kind: str
    steps: tuple[str, ...]
    answer: str

    def solution(self) -> str:
        return solution(self.steps, self.answer)


@dataclass(frozen=True)
class Problem:
    family: str
    key: str  # the problem's parameters without wording: the unit of dedup and of the test split
    question: str
    value: Number  # the exact answer computed in code (before rounding)
    answer: str  # the final answer as written after "Answer:", with unit
    steps: tuple[str, ...]
    unit: str = ""
    mistakes: tuple[Mistake, ...] = ()
    distractors: tuple[str, ...] = field(default=())  # extra wrong answers for MCQA

    def solution(self) -> str:
        return solution(self.steps, self.answer)


def solution(steps: tuple[str, ...] | list[str], answer: str) -> str:
    return "\n".join([*steps, f"Answer: {answer}"])


def with_unit(text: str, unit: str) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def fmt(x: Number, places: int | None = None) -> str:
    """Exact decimal text of `x`; with `places`, rounded half away from zero to that many places.

    Without `places`, `x` must have a terminating decimal expansion (callers guarantee it).
    """
    q = x if isinstance(x, Fraction) else Fraction(x)
    num, den = q.numerator, q.denominator
    if places is None:
        places = _places(den)
    # integer arithmetic: round half away from zero at `places` decimals
    n = (2 * abs(num) * 10**places + den) // (2 * den)
    sign = "-" if num < 0 and n else ""
    if places == 0:
        return f"{sign}{n}"
    s = str(n).rjust(places + 1, "0")
    return f"{sign}{s[:-places]}.{s[-places:]}"


def _places(den: int) -> int:
    """Decimal places of 1/den when it terminates (den = 2^a 5^b gives max(a, b))."""
    twos = fives = 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        raise ValueError("no terminating decimal expansion; pass `places`")
    return max(twos, fives)


def eq(x: Number, places: int) -> str:
    """'=' when `x` is exact at `places` decimals, else '≈' (a tutor marks rounding)."""
    return "=" if (Fraction(x) * 10**places).denominator == 1 else "≈"


def dec(x: Number) -> str:
    """Decimal text keeping trailing zeros of a Decimal (16.00 stays 16.00), never exponents."""
    if isinstance(x, Decimal):
        return f"{x:f}"
    return fmt(x)


def frac(x: Fraction) -> str:
    """A fraction in lowest terms as 'p/q' (an integer when q == 1)."""
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def pick(rng, weighted: dict[str, float]) -> str:
    """A key of `weighted`, chosen with those weights (insertion order kept for determinism)."""
    keys = list(weighted)
    return rng.choices(keys, weights=[weighted[k] for k in keys], k=1)[0]
