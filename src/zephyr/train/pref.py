"""Preference alignment with LoRA: DPO (sigmoid), IPO and KTO, against a cached reference.

    zephyr train dpo recipes/demo.yaml          (dpo.loss: sigmoid | ipo)
    zephyr train kto recipes/demo.yaml

Reference = the start model with the adapter disabled; its log-probs are computed once before the
first step and cached on disk (refcache.py). Chosen and rejected share the prompt: with
`prefix_sharing` each pair is one row [prompt, chosen, rejected] and a 4D mask keeps rejected from
seeing chosen (batching.collate_shared), so the prompt is computed once, not twice.

Validation (every eval_every steps, and at steps 0 and last) on the held-out pairs: loss, reward
accuracy (strict: chosen reward > rejected reward; a tie counts as wrong, so step 0, where every
margin is 0, shows 0.0 like TRL), mean margin, mean chosen and rejected rewards (beta * log-ratio).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from zephyr.arch import takes_position_ids
from zephyr.errors import ZephyrError
from zephyr.io import sha256_json
from zephyr.train import refcache
from zephyr.train.batching import (
    collate_pairs,
    collate_shared,
    collate_unpaired,
    micro_batches,
    plan_epoch,
)
from zephyr.train.common import accelerator as make_accelerator
from zephyr.train.common import capped_rows, load_policy, to_device, train_precision
from zephyr.train.config import PrefConfig
from zephyr.train.encode import PairExample, encode_pair
from zephyr.train.logprobs import TokenLogps, autocast, seg_counts, seq_logps
from zephyr.train.loop import Run, Task, fit_and_save
from zephyr.train.losses import dpo_loss, ipo_loss, kto_kl, kto_loss


def encode_pairs(tok, rows: list[dict], cfg: PrefConfig) -> tuple[list[PairExample], int]:
    """Encoded pairs, and how many were dropped because a completion was truncated away."""
    out = [encode_pair(tok, r, cfg.max_prompt_len, cfg.max_seq_len) for r in rows]
    kept = [p for p in out if p is not None]
    return kept, len(out) - len(kept)


def kl_partners(n: int, group: int, seed: int) -> list[int]:
    """KTO's mismatched pairs: rows are grouped `group` at a time (seeded) and each takes the
    completion of the next row of its group, as TRL builds its KL data set per batch."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for s in range(0, n, group):
        g = order[s : s + group]
        for j, i in enumerate(g):
            partner[i] = g[(j + 1) % len(g)]
    return partner


def reward_stats(
    c: torch.Tensor, r: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float
) -> dict:
    """Sums over pairs (the caller divides): strict accuracy, ties, margin, rewards."""
    cr, rj = beta * (c - rc), beta * (r - rr)
    return {
        "reward_acc": float((cr > rj).sum()),
        "ties": float((cr == rj).sum()),
        "margin": float((cr - rj).sum()),
        "chosen_reward": float(cr.sum()),
        "rejected_reward": float(rj.sum()),
    }


def _spans(n: int, size: int) -> list[list[int]]:
    return [list(range(k, min(k + size, n))) for k in range(0, n, size)]


@dataclass
class PrefData:
    """The encoded pairs and what each loss trains on. KTO rows: 2j = (prompt_j, chosen_j)
    desirable, 2j+1 = (prompt_j, rejected_j) undesirable; kl_rows / val_kl: mismatched pairs."""

    pairs: list[PairExample]
    val: list[PairExample]
    dropped: int  # pairs whose completion was truncated away
    val_dropped: int
    rows: list[tuple]  # what KTO trains on
    kl_rows: list[tuple]  # KTO only (else empty), as val_kl
    val_kl: list[tuple]
    lengths: list[int]  # tokens per training row (pairs, or KTO rows)
    val_len: list[int]
    collate: Callable  # pairs -> batch (shared prefix or two rows per pair)
    unpaired: Callable  # (prompt, completion) rows -> batch

    def val_order(self) -> list[int]:
        """Validation pairs longest first (the reference and evaluate batch them so)."""
        return sorted(range(len(self.val)), key=lambda i: -self.val_len[i])


def pref_data(tok, cfg: PrefConfig, train_path: Path, val_path: Path, seed: int) -> PrefData:
    kto = cfg.loss == "kto"
    pairs, dropped = encode_pairs(tok, capped_rows(train_path, cfg.max_train, seed), cfg)
    val_rows = capped_rows(val_path, cfg.max_val, seed) if val_path.exists() else []
    val, val_dropped = encode_pairs(tok, val_rows, cfg)
    if not pairs:
        raise ZephyrError(
            f"every pair of {train_path} lost its completion to truncation; raise max_seq_len or lower max_prompt_len"
        )
    pad = tok.pad_token_id
    collate = partial(collate_shared if cfg.prefix_sharing else collate_pairs, pad_id=pad)
    pair_len = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
    val_len = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in val]
    rows = [(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)]
    partner = kl_partners(len(rows), cfg.micro_batch, seed) if kto else []
    kl_rows = [(rows[i][0], rows[partner[i]][1]) for i in range(len(rows))] if kto else []
    val_kl = (
        [(p.prompt, val[(i + 1) % len(val)].chosen) for i, p in enumerate(val)]
        if kto and len(val) > 1
        else []
    )
    lengths = [len(p) + len(c) for p, c in rows] if kto else pair_len
    return PrefData(
        pairs=pairs,
        val=val,
        dropped=dropped,
        val_dropped=val_dropped,
        rows=rows,
        kl_rows=kl_rows,
        val_kl=val_kl,
        lengths=lengths,
        val_len=val_len,
        collate=collate,
        unpaired=partial(collate_unpaired, pad_id=pad),
    )


def reference(
    cfg: PrefConfig, data: PrefData, lm, model: str, precision, acc, seed: int
) -> tuple[dict, bool, Path]:
    """Reference log-probs (adapter disabled), computed once and cached on disk: (ref, hit, path).
    Computed in the micro-batches of epoch 0 (see refcache.seq_logps_all), val in evaluate's order."""
    kto, world, device = cfg.loss == "kto", acc.num_processes, acc.device
    step_rows = cfg.micro_batch * cfg.grad_accum * world
    first = [
        mb
        for step in plan_epoch(data.lengths, step_rows, seed, 0)
        for r in range(world)
        for mb in micro_batches(step, data.lengths, cfg.micro_batch, world, r)
    ]
    first = refcache.cover(first, len(data.lengths), data.lengths, cfg.micro_batch)
    bs = 2 * cfg.micro_batch
    val_order = data.val_order()
    val_batches = [val_order[k : k + bs] for k in range(0, len(val_order), bs)]
    ref_net = TokenLogps(lm)
    data_digest = sha256_json(
        {
            "pairs": [(p.prompt, p.chosen, p.rejected) for p in data.pairs],
            "val": [(p.prompt, p.chosen, p.rejected) for p in data.val],
            "kl": data.kl_rows,
            "val_kl": data.val_kl,
            "bf16": precision.weights_dtype,
            "attention": lm.get_base_model().config._attn_implementation,
            "shared": cfg.prefix_sharing,
            "batches": first,
            "loss": kto,
        }
    )[:16]
    path = refcache.cache_path(data_digest, refcache.model_hash(model))

    def compute() -> dict:
        def logps(items: list, collate: Callable, batches: list[list[int]]) -> torch.Tensor:
            return refcache.seq_logps_all(ref_net, items, collate, batches, device)

        lm.eval()
        with lm.disable_adapter(), autocast(precision):
            out = {"val": logps(data.val, data.collate, val_batches)}
            if kto:
                out["rows"] = logps(data.rows, data.unpaired, first)[:, 0]
                out["kl"] = logps(data.kl_rows, data.unpaired, first)[:, 0]
                out["val_kl"] = (
                    logps(data.val_kl, data.unpaired, _spans(len(data.val_kl), bs))[:, 0]
                    if data.val_kl
                    else torch.zeros(0)
                )
            else:
                out["train"] = logps(data.pairs, data.collate, first)
        lm.train()
        return out

    with acc.main_process_first():
        ref, hit = refcache.cached(path, compute, cfg.ref_cache)
    return ref, hit, path


def _pair_losses(cfg: PrefConfig, c, r, rc, rr, batch) -> torch.Tensor:
    if cfg.loss == "ipo":
        n = seg_counts(batch)
        return ipo_loss(c, r, rc, rr, cfg.beta, n[0::2], n[1::2])
    return dpo_loss(c, r, rc, rr, cfg.beta)


def _kto_losses(cfg: PrefConfig, logps, ref_logps, desirable, kl) -> torch.Tensor:
    w_d, w_u = cfg.desirable_weight, cfg.undesirable_weight
    return kto_loss(logps, ref_logps, desirable, kl, cfg.beta, w_d, w_u)


def _evaluator(cfg: PrefConfig, data: PrefData, ref: dict, acc) -> Callable[[Any], dict]:
    """Validation: loss and reward statistics over the val pairs, reduced over processes."""
    kto, device, world, rank = cfg.loss == "kto", acc.device, acc.num_processes, acc.process_index
    bs, val = 2 * cfg.micro_batch, data.val

    def evaluate(net) -> dict:
        order = data.val_order()[rank::world]
        keys = ("val_loss", "reward_acc", "ties", "margin", "chosen_reward", "rejected_reward")
        sums = dict.fromkeys(keys, 0.0)
        kl = torch.zeros(())
        if kto and data.val_kl:  # one KL estimate over the whole val set
            batches = _spans(len(data.val_kl), bs)
            pol = refcache.seq_logps_all(net, data.val_kl, data.unpaired, batches, device)[:, 0]
            kl = kto_kl(pol, ref["val_kl"])
        for k in range(0, len(order), bs):
            idx = order[k : k + bs]
            batch = to_device(data.collate([val[i] for i in idx]), device)
            logps = seq_logps(net, batch).float()
            c, r = logps[0::2], logps[1::2]
            rc, rr = ref["val"][idx, 0].to(device), ref["val"][idx, 1].to(device)
            if kto:
                both = torch.stack([c, r], 1).reshape(-1)
                refs = torch.stack([rc, rr], 1).reshape(-1)
                desirable = torch.arange(len(both), device=device) % 2 == 0
                losses = _kto_losses(cfg, both, refs, desirable, kl.to(device))
                sums["val_loss"] += float(losses.view(-1, 2).mean(1).sum())
            else:
                sums["val_loss"] += float(_pair_losses(cfg, c, r, rc, rr, batch).sum())
            for key, v in reward_stats(c, r, rc, rr, cfg.beta).items():
                sums[key] += v
        vec = torch.tensor(list(sums.values()), dtype=torch.float64)
        if world > 1:
            vec = acc.reduce(vec, "sum")
        n = max(len(val), 1)
        return {k: float(v) / n for k, v in zip(sums, vec.tolist(), strict=False)}

    return evaluate


def pref_task(cfg: PrefConfig, data: PrefData, ref: dict, acc) -> Task:
    """The loop's task: per-micro-batch summed DPO/IPO or KTO loss (the loop divides by the
    step's global count of pairs or rows) and validation."""
    device, world = acc.device, acc.num_processes

    def dpo_step(net, mb: list[int]):
        batch = to_device(data.collate([data.pairs[i] for i in mb]), device)
        logps = seq_logps(net, batch)
        c, r = logps[0::2], logps[1::2]
        rc, rr = ref["train"][mb, 0].to(device), ref["train"][mb, 1].to(device)
        losses = _pair_losses(cfg, c, r, rc, rr, batch)
        stats = reward_stats(c.detach(), r.detach(), rc, rr, cfg.beta)
        return losses.sum(), {
            "train_reward_acc": stats["reward_acc"],
            "train_margin": stats["margin"],
        }

    def kto_step(net, mb: list[int]):
        batch = to_device(data.unpaired([data.rows[i] for i in mb]), device)
        logps = seq_logps(net, batch)
        with torch.no_grad():  # the KL reference point carries no gradient (as in TRL)
            kl_batch = to_device(data.unpaired([data.kl_rows[i] for i in mb]), device)
            kl_logps = seq_logps(net, kl_batch)
        kl = kto_kl(kl_logps, ref["kl"][mb].to(device), acc.reduce if world > 1 else None)
        desirable = torch.tensor([i % 2 == 0 for i in mb], device=device)
        losses = _kto_losses(cfg, logps, ref["rows"][mb].to(device), desirable, kl)
        return losses.sum(), {"kl": float(kl) * len(mb)}

    loss = kto_step if cfg.loss == "kto" else dpo_step
    return Task(data.lengths, lambda rs: float(len(rs)), loss, _evaluator(cfg, data, ref, acc))


def train_pref(
    cfg: PrefConfig,
    model: str,
    data_dir: Path,
    out_dir: Path,
    seed: int,
    console=None,
    halt_after: int | None = None,
    device: str = "auto",
) -> dict:
    """DPO / IPO / KTO on data_dir/pref_train.jsonl; write adapter/, model/, metrics, plots."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.loss == "kto" and cfg.micro_batch < 2:
        raise ZephyrError(
            f"kto.micro_batch is {cfg.micro_batch}; KTO's KL estimate pairs each row with another row of its "
            "micro-batch, so it needs micro_batch >= 2 (use grad_accum to keep the batch small)"
        )
    train_path, val_path = data_dir / "pref_train.jsonl", data_dir / "pref_val.jsonl"
    if not train_path.exists():
        raise ZephyrError(
            f"{train_path} not found; run the data stage with preference sources, or pass --data DIR"
        )
    precision = train_precision(cfg, device)
    acc = make_accelerator(precision, cfg, out_dir)
    lm, tok = load_policy(model, cfg, seed, precision, acc)
    if cfg.prefix_sharing and not takes_position_ids(lm):  # ALiBi (Bloom): positions cannot restart
        cfg = dataclasses.replace(cfg, prefix_sharing=False)
    data = pref_data(tok, cfg, train_path, val_path, seed)
    ref, hit, path = reference(cfg, data, lm, model, precision, acc, seed)
    if acc.is_main_process and console:
        console.print(
            f"{cfg.loss}: {len(data.pairs)} train pairs ({data.dropped} dropped: completion truncated "
            f"away), {len(data.val)} val pairs ({data.val_dropped} dropped), beta {cfg.beta}, "
            f"{acc.num_processes} process(es), {precision.label}, prefix sharing "
            f"{'on' if cfg.prefix_sharing else 'off'}, reference log-probs "
            f"{'loaded from cache' if hit else 'computed'} ({path.name})"
        )
    rows = {"train": len(data.pairs), "val": len(data.val)}
    run = Run(
        cfg=cfg,
        task=pref_task(cfg, data, ref, acc),
        lm=lm,
        tok=tok,
        accelerator=acc,
        precision=precision,
        out_dir=out_dir,
        seed=seed,
        inputs=[train_path, val_path],
        console=console,
        halt_after=halt_after,
        extra={
            "kind": cfg.loss,
            "base": str(model),
            "ref_cache": {"path": str(path), "hit": hit},
            "rows": {**rows, "dropped": data.dropped, "val_dropped": data.val_dropped},
        },
    )
    return fit_and_save(run)
