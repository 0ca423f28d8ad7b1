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
from functools import partial
from pathlib import Path

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
from zephyr.train.loop import Task, fit_and_save
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
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    kto = cfg.loss == "kto"
    if kto and cfg.micro_batch < 2:
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
    device, world, rank = acc.device, acc.num_processes, acc.process_index
    lm, tok = load_policy(model, cfg, seed, precision, acc)
    if cfg.prefix_sharing and not takes_position_ids(lm):  # ALiBi (Bloom): positions cannot restart
        cfg = dataclasses.replace(cfg, prefix_sharing=False)
    pad = tok.pad_token_id

    # ---- data: pairs (truncated-away pairs dropped and counted) ----
    pairs, dropped = encode_pairs(tok, capped_rows(train_path, cfg.max_train, seed), cfg)
    val_rows = capped_rows(val_path, cfg.max_val, seed) if val_path.exists() else []
    val, val_dropped = encode_pairs(tok, val_rows, cfg)
    if not pairs:
        raise ZephyrError(
            f"every pair of {train_path} lost its completion to truncation; raise max_seq_len or lower max_prompt_len"
        )
    collate = partial(collate_shared if cfg.prefix_sharing else collate_pairs, pad_id=pad)
    unpaired = partial(collate_unpaired, pad_id=pad)
    pair_len = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs]
    val_len = [len(p.prompt) + len(p.chosen) + len(p.rejected) for p in val]
    # KTO rows: 2j = (prompt_j, chosen_j) desirable, 2j+1 = (prompt_j, rejected_j) undesirable
    rows = [(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)]
    partner = kl_partners(len(rows), cfg.micro_batch, seed) if kto else []
    kl_rows = [(rows[i][0], rows[partner[i]][1]) for i in range(len(rows))] if kto else []
    val_kl = (
        [(p.prompt, val[(i + 1) % len(val)].chosen) for i, p in enumerate(val)]
        if kto and len(val) > 1
        else []
    )

    # ---- reference log-probs: adapter disabled, computed once, cached on disk ----
    # in the micro-batches of epoch 0 (see refcache.seq_logps_all), val in evaluate()'s order
    lengths = [len(p) + len(c) for p, c in rows] if kto else pair_len
    step_rows = cfg.micro_batch * cfg.grad_accum * world
    first = [
        mb
        for step in plan_epoch(lengths, step_rows, seed, 0)
        for r in range(world)
        for mb in micro_batches(step, lengths, cfg.micro_batch, world, r)
    ]
    first = refcache.cover(first, len(lengths), lengths, cfg.micro_batch)
    bs = 2 * cfg.micro_batch
    val_order = sorted(range(len(val)), key=lambda i: -val_len[i])
    val_batches = [val_order[k : k + bs] for k in range(0, len(val_order), bs)]
    ref_net = TokenLogps(lm)
    data_digest = sha256_json(
        {
            "pairs": [(p.prompt, p.chosen, p.rejected) for p in pairs],
            "val": [(p.prompt, p.chosen, p.rejected) for p in val],
            "kl": kl_rows,
            "val_kl": val_kl,
            "bf16": precision.weights_dtype,
            "attention": lm.get_base_model().config._attn_implementation,
            "shared": cfg.prefix_sharing,
            "batches": first,
            "loss": kto,
        }
    )[:16]
    path = refcache.cache_path(data_digest, refcache.model_hash(model))

    def compute() -> dict:
        lm.eval()
        with lm.disable_adapter(), autocast(precision):
            out = {"val": refcache.seq_logps_all(ref_net, val, collate, val_batches, device)}
            if kto:
                out["rows"] = refcache.seq_logps_all(ref_net, rows, unpaired, first, device)[:, 0]
                out["kl"] = refcache.seq_logps_all(ref_net, kl_rows, unpaired, first, device)[:, 0]
                kl_batches = [
                    list(range(k, min(k + bs, len(val_kl)))) for k in range(0, len(val_kl), bs)
                ]
                out["val_kl"] = (
                    refcache.seq_logps_all(ref_net, val_kl, unpaired, kl_batches, device)[:, 0]
                    if val_kl
                    else torch.zeros(0)
                )
            else:
                out["train"] = refcache.seq_logps_all(ref_net, pairs, collate, first, device)
        lm.train()
        return out

    with acc.main_process_first():
        ref, hit = refcache.cached(path, compute, cfg.ref_cache)
    if acc.is_main_process and console:
        console.print(
            f"{cfg.loss}: {len(pairs)} train pairs ({dropped} dropped: completion truncated away), {len(val)} val pairs "
            f"({val_dropped} dropped), beta {cfg.beta}, {world} process(es), "
            f"{precision.label}, prefix sharing {'on' if cfg.prefix_sharing else 'off'}, "
            f"reference log-probs {'loaded from cache' if hit else 'computed'} ({path.name})"
        )

    def pair_losses(c, r, rc, rr, batch) -> torch.Tensor:
        if cfg.loss == "ipo":
            n = seg_counts(batch)
            return ipo_loss(c, r, rc, rr, cfg.beta, n[0::2], n[1::2])
        return dpo_loss(c, r, rc, rr, cfg.beta)

    # ---- the per-micro-batch loss (summed; the loop divides by the step's global count) ----
    def dpo_step(net, mb: list[int]):
        batch = to_device(collate([pairs[i] for i in mb]), device)
        logps = seq_logps(net, batch)
        c, r = logps[0::2], logps[1::2]
        rc, rr = ref["train"][mb, 0].to(device), ref["train"][mb, 1].to(device)
        losses = pair_losses(c, r, rc, rr, batch)
        stats = reward_stats(c.detach(), r.detach(), rc, rr, cfg.beta)
        return losses.sum(), {
            "train_reward_acc": stats["reward_acc"],
            "train_margin": stats["margin"],
        }

    def kto_step(net, mb: list[int]):
        batch = to_device(unpaired([rows[i] for i in mb]), device)
        logps = seq_logps(net, batch)
        with torch.no_grad():  # the KL reference point carries no gradient (as in TRL)
            kl_logps = seq_logps(net, to_device(unpaired([kl_rows[i] for i in mb]), device))
        kl = kto_kl(kl_logps, ref["kl"][mb].to(device), acc.reduce if world > 1 else None)
        ref_logps = ref["rows"][mb].to(device)
        desirable = torch.tensor([i % 2 == 0 for i in mb], device=device)
        losses = kto_loss(
            logps, ref_logps, desirable, kl, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight
        )
        return losses.sum(), {"kl": float(kl) * len(mb)}

    def evaluate(net) -> dict:
        order = sorted(range(len(val)), key=lambda i: -val_len[i])[rank::world]
        sums = {
            "val_loss": 0.0,
            "reward_acc": 0.0,
            "ties": 0.0,
            "margin": 0.0,
            "chosen_reward": 0.0,
            "rejected_reward": 0.0,
        }
        kl = torch.zeros(())
        if kto and val_kl:  # one KL estimate over the whole val set
            kl_batches = [
                list(range(k, min(k + bs, len(val_kl)))) for k in range(0, len(val_kl), bs)
            ]
            pol = refcache.seq_logps_all(net, val_kl, unpaired, kl_batches, device)[:, 0]
            kl = kto_kl(pol, ref["val_kl"])
        for k in range(0, len(order), bs):
            idx = order[k : k + bs]
            batch = to_device(collate([val[i] for i in idx]), device)
            logps = seq_logps(net, batch).float()
            c, r = logps[0::2], logps[1::2]
            rc, rr = ref["val"][idx, 0].to(device), ref["val"][idx, 1].to(device)
            if kto:
                both = torch.stack([c, r], 1).reshape(-1)
                refs = torch.stack([rc, rr], 1).reshape(-1)
                desirable = torch.arange(len(both), device=device) % 2 == 0
                losses = kto_loss(
                    both,
                    refs,
                    desirable,
                    kl.to(device),
                    cfg.beta,
                    cfg.desirable_weight,
                    cfg.undesirable_weight,
                )
                sums["val_loss"] += float(losses.view(-1, 2).mean(1).sum())
            else:
                sums["val_loss"] += float(pair_losses(c, r, rc, rr, batch).sum())
            for key, v in reward_stats(c, r, rc, rr, cfg.beta).items():
                sums[key] += v
        vec = torch.tensor(list(sums.values()), dtype=torch.float64)
        if world > 1:
            vec = acc.reduce(vec, "sum")
        n = max(len(val), 1)
        return {k: float(v) / n for k, v in zip(sums, vec.tolist(), strict=False)}

    task = Task(lengths, lambda rs: float(len(rs)), kto_step if kto else dpo_step, evaluate)
    return fit_and_save(
        cfg,
        task,
        lm,
        tok,
        acc,
        out_dir,
        seed,
        console,
        halt_after,
        precision,
        [train_path, val_path],
        kind=cfg.loss,
        base=str(model),
        ref_cache={"path": str(path), "hit": hit},
        rows={"train": len(pairs), "val": len(val), "dropped": dropped, "val_dropped": val_dropped},
    )
