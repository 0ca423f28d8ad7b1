"""Multiple-choice answers without a favourite letter: cyclic-permutation debiasing.

A small model prefers some letters whatever the content ("Large Language Models Are Not Robust
Multiple Choice Selectors", Zheng et al., ICLR 2024). Two remedies from that paper:
- `cyclic`: score each question under the n cyclic shifts of its choices (choice i sits at every
  letter once) and average each choice's probability over the shifts. n forward passes; the
  letter prior cancels because every choice meets every letter equally often.
- `pride`: estimate the letter prior once from the cyclic shifts of a few questions (the mean of
  their log-probabilities per letter, renormalised), then divide it out of a single pass:
  p(choice at letter d) ∝ p_observed(d) / prior(d). One pass per question after the estimate.
Both return calibrated probabilities per choice (in the original order); `letter_table` gives
the predicted-vs-gold letter distribution with Wilson intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from zephyr.data.schema import LETTERS

Scorer = Callable[[list[dict]], list[list[float]]]  # items -> letter probabilities per item


def shifts(n: int) -> list[list[int]]:
    """The n cyclic permutations: shift k puts original choice (j + k) % n at letter j."""
    return [[(j + k) % n for j in range(n)] for k in range(n)]


def permuted(item: dict, perm: list[int]) -> dict:
    return {**item, "choices": [item["choices"][i] for i in perm]}


def letter_probs(model: Any, tokenizer: Any, system: str | None, batch_size: int) -> Scorer:
    """A scorer over the tutor's MCQA prompt: one forward pass per item, letters only."""
    from zephyr.tutor.mcqa import answer_mcq_batch

    def score(items: list[dict]) -> list[list[float]]:
        answers = answer_mcq_batch(model, tokenizer, items, system, batch_size)
        return [[a["probs"][LETTERS[i]] for i in range(len(a["probs"]))] for a in answers]

    return score


def cyclic(score: Scorer, items: list[dict]) -> tuple[list[list[float]], list[list[list[float]]]]:
    """(debiased probabilities per item in choice order, raw letter probabilities per shift)."""
    jobs = [(i, perm) for i, it in enumerate(items) for perm in shifts(len(it["choices"]))]
    raw = score([permuted(items[i], perm) for i, perm in jobs])
    out = [[0.0] * len(it["choices"]) for it in items]
    per_item: list[list[list[float]]] = [[] for _ in items]
    for (i, perm), probs in zip(jobs, raw, strict=True):
        per_item[i].append(probs)
        for letter, choice in enumerate(perm):
            out[i][choice] += probs[letter] / len(perm)
    return out, per_item


def prior_from(shifted: list[list[list[float]]], n: int) -> list[float]:
    """PriDe's letter prior: per letter, the mean log-probability over questions and shifts."""
    logs = [0.0] * n
    count = 0
    for per_shift in shifted:
        for probs in per_shift:
            if len(probs) == n:
                count += 1
                for d in range(n):
                    logs[d] += math.log(max(probs[d], 1e-12))
    if count == 0:
        return [1.0 / n] * n
    weights = [math.exp(v / count) for v in logs]
    return [w / sum(weights) for w in weights]


def apply_prior(probs: list[float], prior: list[float]) -> list[float]:
    """Observed letter probabilities with the prior divided out, renormalised."""
    if len(prior) != len(probs):
        return list(probs)
    raw = [p / max(q, 1e-12) for p, q in zip(probs, prior, strict=True)]
    total = sum(raw)
    return [r / total for r in raw]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def letter_table(preds: list[int], golds: list[int], n_letters: int = 4) -> dict:
    """Share of each letter among predictions and golds, with 95% Wilson intervals."""
    table = {}
    for d in range(n_letters):
        k_pred, k_gold = sum(p == d for p in preds), sum(g == d for g in golds)
        table[LETTERS[d]] = {
            "pred": k_pred / max(len(preds), 1),
            "pred_ci": wilson(k_pred, len(preds)),
            "gold": k_gold / max(len(golds), 1),
            "gold_ci": wilson(k_gold, len(golds)),
        }
    return table


def argmax(probs: list[float]) -> int:
    return max(range(len(probs)), key=lambda i: probs[i])
