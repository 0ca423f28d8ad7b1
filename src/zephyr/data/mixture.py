"""Mixture semantics: per source a seeded shuffle, then the first N_i = min(cap, S_i) rows.

A cap above what a source has takes the whole source once: we never oversample (LLaMA-Factory's
`num_samples` repeats rows with replacement when N > S; we keep each row at most once). The sources
are then concatenated, shuffled with the seed, and a validation fraction is held out.
"""

from __future__ import annotations

import random


def take(rows: list[dict], cap: int | None, seed: int, label: str) -> list[dict]:
    """A seeded shuffle of `rows`, cut to min(cap, len(rows)); the order depends on seed and source."""
    rows = list(rows)
    random.Random(f"{seed}/{label}").shuffle(rows)
    return rows if cap is None else rows[: max(0, cap)]


def split(parts: list[list[dict]], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Concatenate, shuffle, and hold out round(val_fraction * N) rows (at least one when
    val_fraction > 0 and there are two rows or more) as validation."""
    rows = [r for part in parts for r in part]
    random.Random(seed).shuffle(rows)
    n_val = round(len(rows) * val_fraction)
    if val_fraction > 0 and len(rows) >= 2:
        n_val = min(max(n_val, 1), len(rows) - 1)
    return rows[n_val:], rows[:n_val]


def shuffled(rows: list[dict], seed: int) -> list[dict]:
    """A seeded shuffle (a copy)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows
