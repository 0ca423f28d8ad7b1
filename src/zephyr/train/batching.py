"""Length-grouped step plans and collation into one flat "which logits, which targets" format.

A step is `micro_batch * grad_accum * world` rows. Rows are shuffled per epoch (seeded), grouped
into mega-chunks of 16 steps and sorted by length inside each chunk, so a micro-batch holds rows of
similar length and padding wastes little compute; step order is shuffled again so lengths do not
trend over an epoch. The plan is a pure function of (seed, epoch): a resumed run rebuilds it and
continues at the saved step, mid-epoch.

Every collated batch carries `src` (flat positions in batch*len whose hidden state predicts a
target), `tgt` (the target ids) and `seg` (which sequence each target belongs to): SFT, DPO with or
without prefix sharing and KTO are all "sum of log-probs per segment".
"""

from __future__ import annotations

import math
import random

import torch

from zephyr.padding import right_pad

MEGA = 16  # steps per length-sorting chunk


def plan_epoch(lengths: list[int], step_rows: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of each full step of one epoch (the last partial step is dropped)."""
    order = list(range(len(lengths)))
    rng = random.Random(seed * 100_003 + epoch)
    rng.shuffle(order)
    n_steps = len(order) // step_rows
    order = order[: n_steps * step_rows]
    steps: list[list[int]] = []
    chunk = step_rows * MEGA
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        steps += [part[k : k + step_rows] for k in range(0, len(part), step_rows)]
    rng.shuffle(steps)
    return steps


def steps_per_epoch(n_rows: int, step_rows: int) -> int:
    return n_rows // step_rows


def total_steps(n_rows: int, step_rows: int, epochs: float, max_steps: int) -> int:
    return (
        max_steps
        if max_steps > 0
        else max(1, math.ceil(epochs * steps_per_epoch(n_rows, step_rows)))
    )


def micro_batches(
    step: list[int], lengths: list[int], micro: int, world: int, rank: int
) -> list[list[int]]:
    """This process's micro-batches of one step: rows sorted by length, dealt round-robin."""
    rows = sorted(step, key=lambda i: (-lengths[i], i))
    chunks = [rows[k : k + micro] for k in range(0, len(rows), micro)]
    return chunks[rank::world]


def _targets(width: int, items: list[tuple[int, int, list[int], list[int]]]) -> dict:
    """items: (row b, segment, positions predicting, target ids) -> flat src/tgt/seg tensors."""
    src, tgt, seg = [], [], []
    for b, s, pos, ids in items:
        src += [b * width + p for p in pos]
        tgt += ids
        seg += [s] * len(ids)
    return {
        "src": torch.tensor(src, dtype=torch.long),
        "tgt": torch.tensor(tgt, dtype=torch.long),
        "seg": torch.tensor(seg, dtype=torch.long),
    }


def collate_sft(examples: list, pad_id: int) -> dict:
    ids, mask = right_pad([e.ids for e in examples], pad_id)
    width = ids.shape[1]
    items = []
    for b, e in enumerate(examples):
        pos = [t - 1 for t in range(1, len(e.ids)) if e.labels[t]]
        items.append((b, b, pos, [e.ids[p + 1] for p in pos]))
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": None,
        "n_seg": len(examples),
        **_targets(width, items),
    }


def collate_pairs(pairs: list, pad_id: int) -> dict:
    """2B rows: prompt+chosen for every pair, then prompt+rejected (segments 2b, 2b+1)."""
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    ids, mask = right_pad(seqs, pad_id)
    width = ids.shape[1]
    items = []
    for b, p in enumerate(pairs):
        n = len(p.prompt)
        for row, s, comp in ((b, 2 * b, p.chosen), (len(pairs) + b, 2 * b + 1, p.rejected)):
            items.append((row, s, list(range(n - 1, n - 1 + len(comp))), comp))
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": None,
        "n_seg": 2 * len(pairs),
        **_targets(width, items),
    }


def collate_shared(pairs: list, pad_id: int) -> dict:
    """B rows [prompt, chosen, rejected]: the prompt is computed once per pair.

    Rejected tokens see the prompt but not the chosen tokens (4D mask), and their positions restart
    where the prompt ends, so each completion sees exactly what it would see on its own row.
    """
    seqs = [p.prompt + p.chosen + p.rejected for p in pairs]
    ids, _ = right_pad(seqs, pad_id)
    bsz, width = ids.shape
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = causal.repeat(bsz, 1, 1)
    pos = torch.arange(width).repeat(bsz, 1)
    eye = torch.eye(width, dtype=torch.bool)
    items = []
    for b, p in enumerate(pairs):
        n, c, r = len(p.prompt), len(p.chosen), len(p.rejected)
        mask[b, n + c : n + c + r, n : n + c] = False  # rejected never attends to chosen
        mask[b, :, n + c + r :] = False  # nobody attends to padding
        mask[b] |= eye & (torch.arange(width) >= n + c + r)  # padding rows see themselves (no NaN)
        pos[b, n + c :] = torch.arange(n, n + width - n - c)
        items.append((b, 2 * b, list(range(n - 1, n - 1 + c)), p.chosen))
        items.append((b, 2 * b + 1, [n - 1] + list(range(n + c, n + c + r - 1)), p.rejected))
    return {
        "input_ids": ids,
        "attention_mask": mask[:, None],
        "position_ids": pos,
        "n_seg": 2 * len(pairs),
        **_targets(width, items),
    }


def collate_unpaired(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """KTO rows (prompt, completion), one segment each."""
    ids, mask = right_pad([p + c for p, c in rows], pad_id)
    width = ids.shape[1]
    items = [
        (b, b, list(range(len(p) - 1, len(p) - 1 + len(c))), c) for b, (p, c) in enumerate(rows)
    ]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": None,
        "n_seg": len(rows),
        **_targets(width, items),
    }
