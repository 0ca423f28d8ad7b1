"""The one explicit training loop shared by SFT, DPO/IPO and KTO (no HF Trainer, no callbacks).

Reads top to bottom: plan steps -> resume -> for each step: micro-batches forward/backward
(normalised by the step's global count of label tokens or pairs) -> clip -> AdamW -> schedule ->
log -> validate -> checkpoint. Under `accelerate launch` each process takes its share of every
step's micro-batches and DDP averages the gradients; the loss is scaled by the world size so the
result equals a single process running the same global batch. Model, optimizer and scheduler go
through `accelerator.prepare` and clipping through `accelerator.clip_grad_norm_`, so accelerate's
DDP / FSDP / DeepSpeed wrappers and its fp16 GradScaler (CUDA without bf16) apply.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zephyr.device import Precision
from zephyr.errors import ZephyrError
from zephyr.io import append_jsonl, atomic_write
from zephyr.train import checkpoint, tracking
from zephyr.train.batching import micro_batches, plan_epoch, steps_per_epoch, total_steps
from zephyr.train.config import TrainConfig
from zephyr.train.logprobs import TokenLogps, autocast


class Halt(Exception):
    """Raised by `halt_after` to simulate a crash mid-run (tests of --resume)."""


@dataclass
class Task:
    """What a trainer hands the loop."""

    lengths: list[int]  # tokens per training row (length grouping, tokens/s)
    norm: Callable[[list[int]], float]  # a step's global normaliser (label tokens, pairs, rows)
    loss: Callable[[Any, list[int]], tuple[torch.Tensor, dict]]  # summed loss of a micro-batch
    evaluate: Callable[[Any], dict]  # validation metrics, reduced over processes


def backward_step(
    net, accelerator, task: Task, mbs: list[list[int]], norm: float, precision: Any = False
) -> tuple[float, dict]:
    """Forward/backward every micro-batch of this process; returns its summed loss and stats."""
    world = accelerator.num_processes
    total, stats = 0.0, {}
    for i, mb in enumerate(mbs):
        sync = i == len(mbs) - 1
        ctx = contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(net)
        with ctx:
            with autocast(precision):
                loss_sum, st = task.loss(net, mb)
            accelerator.backward(loss_sum * world / norm)
        total += float(loss_sum.detach())
        for k, v in st.items():
            stats[k] = stats.get(k, 0.0) + float(v)
    return total, stats


def _schedule(optimizer, cfg: TrainConfig, steps: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warm = cfg.warmup_steps or int(round(cfg.warmup_ratio * steps))
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warm)
    return get_cosine_schedule_with_warmup(optimizer, warm, steps)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget what was logged after the checkpoint: the rerun logs it again."""
    if not path.exists():
        return
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    rows = []
    for i, x in enumerate(lines, 1):
        try:
            rows.append(json.loads(x))
        except json.JSONDecodeError:
            if i < len(lines):  # only the last line can be torn by a kill mid-append
                raise ZephyrError(f"{path}:{i} is not valid JSON; fix or delete the line") from None
    with atomic_write(path) as f:
        for r in rows:
            if r["step"] <= step:
                f.write(json.dumps(r) + "\n")


def fit(
    cfg: TrainConfig,
    task: Task,
    lm: Any,
    accelerator,
    out_dir: Path,
    seed: int,
    console=None,
    halt_after: int | None = None,
    precision: Any = False,
) -> list[dict]:
    """Train `lm` (a PeftModel) in place; returns the metrics rows. Resumes from out_dir/checkpoints."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    world, rank, main = (
        accelerator.num_processes,
        accelerator.process_index,
        accelerator.is_main_process,
    )
    step_rows = cfg.micro_batch * cfg.grad_accum * world
    n_rows = len(task.lengths)
    spe = steps_per_epoch(n_rows, step_rows)
    steps = total_steps(n_rows, step_rows, cfg.epochs, cfg.max_steps)

    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # one prepare call: DDP/FSDP wrap the net, FSDP re-points the optimizer at its sharded params,
    # DeepSpeed builds its engine from the pair; the scheduler steps once per optimizer step
    net, optimizer, scheduler = accelerator.prepare(
        TokenLogps(lm), optimizer, _schedule(optimizer, cfg, steps)
    )
    scaler = getattr(accelerator, "scaler", None)  # fp16 only: its state is checkpointed too
    metrics_path = out_dir / "metrics.jsonl"
    ckpt_root = out_dir / "checkpoints"

    warn = (lambda m: console.print(f"[yellow]{m}[/]")) if console and main else (lambda m: None)
    last, start = checkpoint.resume(
        ckpt_root,
        lm,
        optimizer,
        scheduler,
        rank,
        world,
        accelerator.wait_for_everyone,
        warn,
        scaler,
    )
    if last is not None:
        if main:
            _truncate_metrics(metrics_path, start)
            console and console.print(f"resuming from {last.name} (step {start}/{steps})")
    elif main and metrics_path.exists():
        metrics_path.unlink()

    rows: list[dict] = []

    def save(step: int) -> None:
        checkpoint.save(
            ckpt_root,
            step,
            lm,
            optimizer,
            scheduler,
            rank,
            world,
            accelerator.wait_for_everyone,
            cfg.keep_checkpoints,
            scaler,
        )

    def log(row: dict) -> None:
        rows.append(row)
        if main:
            append_jsonl(metrics_path, row)
        if cfg.report_to:  # accelerate's trackers (TensorBoard, trackio, W&B, MLflow)
            accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def validate(step: int) -> dict:
        lm.eval()
        with torch.no_grad(), autocast(precision):
            out = task.evaluate(net)
        lm.train()
        return {"step": step, **out}

    lm.train()
    if start == 0:
        log({**validate(0), "lr": scheduler.get_last_lr()[0]})

    plans: dict[int, list[list[int]]] = {}
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not main,
        console=console,
    )
    with progress:
        bar = progress.add_task("train", total=steps, completed=start, info="")
        for step in range(start, steps):
            epoch, k = divmod(step, spe)
            if epoch not in plans:
                plans[epoch] = plan_epoch(task.lengths, step_rows, seed, epoch)
            rows_of_step = plans[epoch][k]
            mbs = micro_batches(rows_of_step, task.lengths, cfg.micro_batch, world, rank)
            t0 = time.perf_counter()
            loss_sum, stats = backward_step(
                net, accelerator, task, mbs, task.norm(rows_of_step), precision
            )
            # unscales fp16 gradients first; FSDP clips its shards, DeepSpeed clips itself (None)
            grad_norm = accelerator.clip_grad_norm_(
                net.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
            )
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0

            local = torch.tensor(
                [loss_sum] + [stats[k] for k in sorted(stats)], dtype=torch.float64
            )
            summed = accelerator.reduce(local, "sum") if world > 1 else local
            norm = task.norm(rows_of_step)
            tokens = sum(task.lengths[i] for i in rows_of_step)
            row = {
                "step": step + 1,
                "epoch": round((step + 1) / spe, 4),
                "loss": float(summed[0]) / norm,
                "lr": lr,
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "tokens": tokens,
                "tok_s": round(tokens / dt, 1),
            }
            row.update(
                {
                    k: float(v) / norm
                    for k, v in zip(sorted(stats), summed[1:].tolist(), strict=False)
                }
            )
            last_step = step + 1 == steps
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last_step:
                row.update(validate(step + 1))
            if (step + 1) % max(cfg.log_every, 1) == 0 or "val_loss" in row:
                log(row)
            else:
                rows.append(row)
            info = f"loss {row['loss']:.4f}  {row['tok_s']:.0f} tok/s" + (
                f"  val {row['val_loss']:.4f}" if "val_loss" in row else ""
            )
            progress.update(bar, advance=1, info=info)
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last_step:
                save(step + 1)
            if halt_after is not None and step + 1 >= halt_after:
                raise Halt(f"halted after step {step + 1}")
    save(steps)
    return rows


def fit_and_save(
    cfg: TrainConfig,
    task: Task,
    lm: Any,
    tok: Any,
    accelerator: Any,
    out_dir: Path,
    seed: int,
    console: Any,
    halt_after: int | None,
    precision: Precision,
    inputs: list[Path],
    **extra: Any,
) -> dict:
    """`fit`, then adapter/model/plots/train.json from the main process; every process waits.
    `inputs[0]` is the training file (named in the error when it is too small for one step)."""
    from zephyr.train.common import save_outputs

    step_rows = cfg.micro_batch * cfg.grad_accum * accelerator.num_processes
    if len(task.lengths) < step_rows:
        raise ZephyrError(
            f"{inputs[0]} gives {len(task.lengths)} usable rows, fewer than one step ({step_rows} = "
            "micro_batch x grad_accum x processes); lower micro_batch or grad_accum"
        )
    if cfg.report_to:
        tracking.start(accelerator, cfg, out_dir, extra.get("kind", "train"))
    try:
        fit(cfg, task, lm, accelerator, out_dir, seed, console, halt_after, precision)
    finally:
        if cfg.report_to:
            accelerator.end_training()
    accelerator.wait_for_everyone()
    info = {}
    if accelerator.is_main_process:
        info = save_outputs(
            lm,
            tok,
            out_dir,
            cfg,
            inputs,
            seed=seed,
            bf16=precision.dtype == torch.bfloat16,
            precision=precision.label,
            device=str(accelerator.device),
            world=accelerator.num_processes,
            **extra,
        )
    accelerator.wait_for_everyone()
    return info
