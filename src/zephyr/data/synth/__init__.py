"""Seeded synthetic STEM data: the project's own embedded default data.

`generate(kind, n_per_family, seed)` returns rows of one record kind for every family:
- "sft":  {"instruction", "input": "", "output"} with a worked solution ending "Answer: <value>"
- "pref": {"prompt", "chosen", "rejected", "error"}: rejected is a realistic mistake
          (arithmetic slip, unit error, sign error, wrong method) or a bare answer without steps
- "mcqa": {"question", "choices" (4), "answer" (index), "subject"}: distractors are the answers
          that typical mistakes give; the correct position is uniform
- "test": SFT rows plus "answer_text": the held-out set.
All rows carry `id`, `source: "synth"` and `family`. Same seed, same rows: each (family, kind)
draws from its own `random.Random("zephyr-synth:<seed>:<family>:<kind>")`, never the global RNG.

How the test set stays out of training (two independent guards):
1. Every problem has a `key` (its parameters without the wording). sha256(family:key) puts one key
   in TEST_SHARE on the test side: training kinds only keep training-side keys and "test" only
   test-side ones, so no test problem is ever trained on, whatever n or seed the training used.
2. "test" also draws from its own seed stream and drops any question whose text appears in what
   the training kinds generate for the same family, seed and n (redundant by 1; kept as a check).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import re
from collections.abc import Callable

from zephyr.data.schema import KINDS as TRAIN_KINDS
from zephyr.data.schema import normalize_answer, row_id
from zephyr.data.synth import (
    arithmetic,
    kinematics,
    linear_equation,
    molar_mass,
    percent_ratio,
    probability,
    unit_conversion,
)
from zephyr.data.synth.problem import Mistake, Problem
from zephyr.errors import ZephyrError

log = logging.getLogger(__name__)

MAKERS: dict[str, Callable[[random.Random], Problem]] = {
    m.FAMILY: m.make
    for m in (
        arithmetic,
        linear_equation,
        unit_conversion,
        kinematics,
        percent_ratio,
        molar_mass,
        probability,
    )
}
FAMILIES: list[str] = list(MAKERS)
KINDS = (*TRAIN_KINDS, "test")  # the record kinds (zephyr.data.schema) and the held-out set
SOURCE = "synth"
TEST_SHARE = 5  # one problem key in five belongs to the held-out side
BARE_SHARE = 0.2  # rejected = bare answer; the rest carry a wrong final answer DPO can learn from


def is_test_key(family: str, key: str) -> bool:
    """Whether a problem key lies on the held-out side of the split (a stable hash, no RNG)."""
    digest = hashlib.sha256(f"{family}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % TEST_SHARE == 0


def _rng(seed: int, family: str, stream: str) -> random.Random:
    return random.Random(f"zephyr-synth:{seed}:{family}:{stream}")


@functools.lru_cache(maxsize=64)  # "test" re-reads the training streams; the CLI asks for both
def _stream(family: str, n: int, seed: int, stream: str) -> tuple[Problem, ...]:
    rng, want_test = _rng(seed, family, stream), stream == "test"
    make, out, seen = MAKERS[family], [], set()
    for _ in range(50 * n + 1000):
        if len(out) >= n:
            break
        p = make(rng)
        if p.key in seen or is_test_key(family, p.key) != want_test:
            continue
        seen.add(p.key)
        out.append(p)
    if len(out) < n:
        log.warning("%s/%s: only %d distinct problems (asked %d)", family, stream, len(out), n)
    return tuple(out)


def problems(
    family: str, n: int, seed: int, stream: str, exclude: set[str] | None = None
) -> list[Problem]:
    """`n` distinct problems (by key) of one family from one seed stream.

    `stream` "test" keeps only held-out keys, any other stream only training keys. Questions in
    `exclude` are dropped and replaced by the stream's next problems. A small key space may give
    fewer than `n` (logged).
    """
    want = n
    while True:
        drawn = _stream(family, want, seed, stream)
        kept = [p for p in drawn if not exclude or p.question not in exclude]
        if len(kept) >= n or len(drawn) < want:  # enough, or the key space is spent
            return kept[:n]
        want += n - len(kept)


def wrong_mistakes(p: Problem) -> list[Mistake]:
    """The problem's mistakes whose final answer really differs from the right one."""
    gold = normalize_answer(p.answer)
    return [m for m in p.mistakes if normalize_answer(m.answer) != gold]


def _base(kind: str, p: Problem) -> dict:
    return {"id": row_id(SOURCE, kind, p.family, p.question), "source": SOURCE, "family": p.family}


def sft_row(p: Problem) -> dict:
    return {**_base("sft", p), "instruction": p.question, "input": "", "output": p.solution()}


def heldout_row(p: Problem) -> dict:
    row = {**_base("test", p), "instruction": p.question, "input": "", "output": p.solution()}
    return {**row, "answer_text": p.answer}


def pref_row(p: Problem, rng: random.Random) -> dict:
    """Chosen: the worked solution. Rejected: a bare answer (BARE_SHARE of rows) or a mistake
    whose kind is drawn uniformly from the kinds this problem has, then one of that kind."""
    wrong = wrong_mistakes(p)
    if not wrong or rng.random() < BARE_SHARE:  # the right answer, no explanation: a poor tutor
        kind, rejected = "bare", f"Answer: {p.answer}"
    else:
        kind = rng.choice(sorted({m.kind for m in wrong}))
        rejected = rng.choice([m for m in wrong if m.kind == kind]).solution()
    return {
        **_base("pref", p),
        "prompt": p.question,
        "chosen": p.solution(),
        "rejected": rejected,
        "error": kind,
    }


def _bump(answer: str, k: int) -> str:
    """The answer with its first number moved by k units of its last decimal place."""
    m = re.search(r"-?\d+(?:\.(\d+))?", answer)
    if not m:
        return f"{answer} ({k})"
    places = len(m.group(1) or "")
    value = round(float(m.group(0)) + k * 10**-places, places)
    text = f"{value:.{places}f}"
    return answer[: m.start()] + text + answer[m.end() :]


def choices_for(p: Problem, rng: random.Random) -> tuple[list[str], int]:
    """Four choices (typical mistakes first as distractors) and the index of the right one."""
    seen = {normalize_answer(p.answer)}
    distractors: list[str] = []
    fallback = [_bump(p.answer, k) for k in (1, -1, 2, -2, 3, 5)]
    for cand in [m.answer for m in wrong_mistakes(p)] + list(p.distractors) + fallback:
        norm = normalize_answer(cand)
        if norm not in seen:
            seen.add(norm)
            distractors.append(cand)
    picked = rng.sample(distractors[:5], 3) if len(distractors) >= 5 else distractors[:3]
    rng.shuffle(picked)
    answer = rng.randrange(4)
    return picked[:answer] + [p.answer] + picked[answer:], answer


def mcqa_row(p: Problem, rng: random.Random) -> dict:
    choices, answer = choices_for(p, rng)
    return {
        **_base("mcqa", p),
        "question": p.question,
        "choices": choices,
        "answer": answer,
        "subject": p.family,
    }


def validate(kind: str, n_per_family: int, families: list[str] | None) -> list[str]:
    if kind not in KINDS:
        raise ZephyrError(f"unknown synthetic kind {kind!r}: use one of {', '.join(KINDS)}")
    if not isinstance(n_per_family, int) or n_per_family < 0:
        raise ZephyrError(f"n_per_family must be a non-negative integer, got {n_per_family!r}")
    families = list(FAMILIES if families is None else families)
    unknown = [f for f in families if f not in MAKERS]
    if unknown:
        raise ZephyrError(
            f"unknown synthetic family {unknown[0]!r}: use some of {', '.join(FAMILIES)}"
        )
    return families


def generate(
    kind: str, n_per_family: int, seed: int, families: list[str] | None = None
) -> list[dict]:
    """`n_per_family` rows of `kind` ("sft", "pref", "mcqa", "test") for each family, seeded."""
    families = validate(kind, n_per_family, families)
    rows: list[dict] = []
    for family in families:
        if kind == "test":
            train = {
                p.question for k in TRAIN_KINDS for p in problems(family, n_per_family, seed, k)
            }
            rows += [heldout_row(p) for p in problems(family, n_per_family, seed, "test", train)]
            continue
        rng = _rng(seed, family, f"{kind}:rows")  # row choices: error kind, choice order
        for p in problems(family, n_per_family, seed, kind):
            if kind == "sft":
                rows.append(sft_row(p))
            elif kind == "pref":
                rows.append(pref_row(p, rng))
            else:
                rows.append(mcqa_row(p, rng))
    return rows


__all__ = ["FAMILIES", "KINDS", "Problem", "generate", "is_test_key", "problems"]
