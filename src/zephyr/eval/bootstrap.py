"""Bootstrap 95% confidence intervals of task metrics, from the per-item scores a task keeps.

Percentile bootstrap: resample the items with replacement (seeded, 1000 times by default),
recompute the metric on each resample, take the 2.5th and 97.5th percentiles. A mean metric is
the mean of its per-item scores; corpus BLEU is recomputed from summed per-item n-gram
statistics, and word/byte perplexity and bits per byte from summed per-article log-likelihoods,
words and bytes, so their intervals are those of the corpus scores themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0


def ci(
    values: Sequence[float] | Sequence[Sequence[float]],
    stat: Callable[[np.ndarray], float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap interval of `stat` (default: the mean) over the items."""
    data = np.asarray(values, dtype=float)
    n = len(data)
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    if stat is None:  # vectorised fast path: the mean of each resample
        stats = data[idx].mean(axis=1)
    else:
        stats = np.array([stat(data[i]) for i in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bleu_stat(stats: np.ndarray) -> float:
    from zephyr.eval.tasks.gsm8k import corpus_bleu

    return corpus_bleu(stats.astype(int).tolist())


def _ratio_stats(kind: str):
    """Corpus perplexity-type metrics of resampled articles: rows are (loglik, words, bytes)."""

    def stat(rows: np.ndarray) -> float:
        total = rows[:, 0].sum()
        if kind == "word_perplexity":
            return float(np.exp(-total / rows[:, 1].sum()))
        if kind == "byte_perplexity":
            return float(np.exp(-total / rows[:, 2].sum()))
        return float(-total / rows[:, 2].sum() / np.log(2))  # bits_per_byte

    return stat


RATIO_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def task_cis(
    result: dict, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, tuple[float, float]]:
    """Intervals for every metric of a TaskResult dict that keeps what is needed to resample."""
    out: dict[str, tuple[float, float]] = {}
    for name, values in (result.get("per_item") or {}).items():
        if name in result.get("metrics", {}) and len(values) > 0:
            out[name] = ci(values, resamples=resamples, seed=seed)
    stats = (result.get("extra") or {}).get("bleu_stats")
    if stats and "bleu4" in result.get("metrics", {}):
        out["bleu4"] = ci(stats, stat=bleu_stat, resamples=resamples, seed=seed)
    per = result.get("per_item") or {}
    if all(k in per for k in ("loglikelihood", "words", "bytes")) and per["loglikelihood"]:
        rows = list(zip(per["loglikelihood"], per["words"], per["bytes"], strict=True))
        for name in RATIO_METRICS:
            if name in result.get("metrics", {}):
                out[name] = ci(rows, stat=_ratio_stats(name), resamples=resamples, seed=seed)
    return out
