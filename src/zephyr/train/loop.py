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
from dataclasses import dataclass, field
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


@dataclass
class Run:
    """One training run as a trainer hands it to the loop: what to train, on what, where to write."""

    cfg: TrainConfig
    task: Task
    lm: Any  # a PeftModel, trained in place
    tok: Any
    accelerator: Any
    precision: Precision
    out_dir: Path
    seed: int
    inputs: list[Path]  # inputs[0]: the training file (named when too small for one step)
    console: Any = None
    halt_after: int | None = None  # raise Halt after this step (tests of --resume)
    extra: dict[str, Any] = field(default_factory=dict)  # train.json fields: kind, base, rows...

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def step_rows(self) -> int:
        """Rows per optimizer step, over all processes."""
        return self.cfg.micro_batch * self.cfg.grad_accum * self.world

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"


@dataclass
class Optim:
    """What `accelerator.prepare` made of a run's model, optimizer and schedule."""

    net: Any
    optimizer: Any
    scheduler: Any
    scaler: Any  # fp16 only: its state is checkpointed too
    steps: int  # optimizer steps of the whole run
    per_epoch: int  # optimizer steps per epoch


def _prepare(run: Run) -> Optim:
    cfg, n_rows = run.cfg, len(run.task.lengths)
    steps = total_steps(n_rows, run.step_rows, cfg.epochs, cfg.max_steps)
    params = [p for p in run.lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # one prepare call: DDP/FSDP wrap the net, FSDP re-points the optimizer at its sharded params,
    # DeepSpeed builds its engine from the pair; the scheduler steps once per optimizer step
    net, optimizer, scheduler = run.accelerator.prepare(
        TokenLogps(run.lm), optimizer, _schedule(optimizer, cfg, steps)
    )
    scaler = getattr(run.accelerator, "scaler", None)
    return Optim(net, optimizer, scheduler, scaler, steps, steps_per_epoch(n_rows, run.step_rows))


def _resume(run: Run, opt: Optim) -> int:
    """Load the newest checkpoint (its step), or start a fresh metrics file (0)."""
    console, acc = run.console, run.accelerator
    warn = (
        (lambda m: console.print(f"[yellow]{m}[/]")) if console and run.main else (lambda m: None)
    )
    last, start = checkpoint.resume(
        run.out_dir / "checkpoints",
        run.lm,
        opt.optimizer,
        opt.scheduler,
        acc.process_index,
        run.world,
        acc.wait_for_everyone,
        warn,
        opt.scaler,
    )
    if last is not None:
        if run.main:
            _truncate_metrics(run.metrics_path, start)
            console and console.print(f"resuming from {last.name} (step {start}/{opt.steps})")
    elif run.main and run.metrics_path.exists():
        run.metrics_path.unlink()
    return start


def _save(run: Run, opt: Optim, step: int) -> None:
    acc = run.accelerator
    checkpoint.save(
        run.out_dir / "checkpoints",
        step,
        run.lm,
        opt.optimizer,
        opt.scheduler,
        acc.process_index,
        run.world,
        acc.wait_for_everyone,
        run.cfg.keep_checkpoints,
        opt.scaler,
    )


def _log(run: Run, rows: list[dict], row: dict) -> None:
    rows.append(row)
    if run.main:
        append_jsonl(run.metrics_path, row)
    if run.cfg.report_to:  # accelerate's trackers (TensorBoard, trackio, W&B, MLflow)
        run.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def _validate(run: Run, opt: Optim, step: int) -> dict:
    run.lm.eval()
    with torch.no_grad(), autocast(run.precision):
        out = run.task.evaluate(opt.net)
    run.lm.train()
    return {"step": step, **out}


def _train_step(run: Run, opt: Optim, step: int, rows_of_step: list[int]) -> dict:
    """One optimizer step over `rows_of_step` (this process's share of them); its metrics row."""
    cfg, acc, task = run.cfg, run.accelerator, run.task
    mbs = micro_batches(rows_of_step, task.lengths, cfg.micro_batch, run.world, acc.process_index)
    t0 = time.perf_counter()
    loss_sum, stats = backward_step(opt.net, acc, task, mbs, task.norm(rows_of_step), run.precision)
    # unscales fp16 gradients first; FSDP clips its shards, DeepSpeed clips itself (None)
    grad_norm = acc.clip_grad_norm_(
        opt.net.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    )
    lr = opt.scheduler.get_last_lr()[0]
    opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0

    local = torch.tensor([loss_sum] + [stats[k] for k in sorted(stats)], dtype=torch.float64)
    summed = acc.reduce(local, "sum") if run.world > 1 else local
    norm = task.norm(rows_of_step)
    tokens = sum(task.lengths[i] for i in rows_of_step)
    row = {
        "step": step + 1,
        "epoch": round((step + 1) / opt.per_epoch, 4),
        "loss": float(summed[0]) / norm,
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        "tokens": tokens,
        "tok_s": round(tokens / dt, 1),
    }
    row.update(
        {k: float(v) / norm for k, v in zip(sorted(stats), summed[1:].tolist(), strict=False)}
    )
    return row


def _progress(run: Run):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not run.main,
        console=run.console,
    )


def _info(row: dict) -> str:
    val = f"  val {row['val_loss']:.4f}" if "val_loss" in row else ""
    return f"loss {row['loss']:.4f}  {row['tok_s']:.0f} tok/s" + val


def fit(run: Run) -> list[dict]:
    """Train `run.lm` in place; returns the metrics rows. Resumes from out_dir/checkpoints."""
    cfg = run.cfg
    opt = _prepare(run)
    start = _resume(run, opt)
    rows: list[dict] = []
    run.lm.train()
    if start == 0:
        _log(run, rows, {**_validate(run, opt, 0), "lr": opt.scheduler.get_last_lr()[0]})

    plans: dict[int, list[list[int]]] = {}
    with _progress(run) as progress:
        bar = progress.add_task("train", total=opt.steps, completed=start, info="")
        for step in range(start, opt.steps):
            epoch, k = divmod(step, opt.per_epoch)
            if epoch not in plans:
                plans[epoch] = plan_epoch(run.task.lengths, run.step_rows, run.seed, epoch)
            row = _train_step(run, opt, step, plans[epoch][k])
            last_step = step + 1 == opt.steps
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last_step:
                row.update(_validate(run, opt, step + 1))
            if (step + 1) % max(cfg.log_every, 1) == 0 or "val_loss" in row:
                _log(run, rows, row)
            else:
                rows.append(row)
            progress.update(bar, advance=1, info=_info(row))
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last_step:
                _save(run, opt, step + 1)
            if run.halt_after is not None and step + 1 >= run.halt_after:
                raise Halt(f"halted after step {step + 1}")
    _save(run, opt, opt.steps)
    return rows


def fit_and_save(run: Run) -> dict:
    """`fit`, then adapter/model/plots/train.json from the main process; every process waits."""
    from zephyr.train.common import save_outputs

    cfg, acc = run.cfg, run.accelerator
    if len(run.task.lengths) < run.step_rows:
        raise ZephyrError(
            f"{run.inputs[0]} gives {len(run.task.lengths)} usable rows, fewer than one step "
            f"({run.step_rows} = micro_batch x grad_accum x processes); lower micro_batch or grad_accum"
        )
    if cfg.report_to:
        tracking.start(acc, cfg, run.out_dir, run.extra.get("kind", "train"))
    try:
        fit(run)
    finally:
        if cfg.report_to:
            acc.end_training()
    acc.wait_for_everyone()
    info = {}
    if run.main:
        info = save_outputs(
            run.lm,
            run.tok,
            run.out_dir,
            cfg,
            run.inputs,
            seed=run.seed,
            bf16=run.precision.dtype == torch.bfloat16,
            precision=run.precision.label,
            device=str(acc.device),
            world=run.world,
            **run.extra,
        )
    acc.wait_for_everyone()
    return info
