"""Checkpoints: adapter weights, optimizer, scheduler, RNG states and the data position (step).

Each checkpoint is written into a temporary directory and renamed into place, so a kill mid-write
leaves the previous checkpoint intact; `latest` only trusts directories with a `state.json`.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zephyr.io import read_json, write_json


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save(
    root: Path,
    step: int,
    model: Any,
    optimizer,
    scheduler,
    rank: int,
    world: int,
    barrier,
    keep: int,
    scaler: Any = None,
) -> None:
    """Rank 0 writes the shared state; every rank writes its own RNG state (dropout streams differ)."""
    final = root / f"step-{step:07d}"
    staging = root / f".staging-{step:07d}"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), staging / f"rng-{rank}.pt")
    if rank == 0:
        torch.save(trainable_state(model), staging / "adapter.pt")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        if scaler is not None:  # fp16 on CUDA: the loss scale resumes where it was
            torch.save(scaler.state_dict(), staging / "scaler.pt")
    barrier()
    if rank == 0:
        write_json(staging / "state.json", {"step": step, "world": world})
        tmp = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
        if final.exists():
            os.replace(final, tmp / final.name)
        os.replace(staging, final)
        shutil.rmtree(tmp, ignore_errors=True)
        for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()


def latest(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists())
    return done[-1] if done else None


def load(path: Path, model: Any, optimizer, scheduler, rank: int, scaler: Any = None) -> int:
    state = read_json(path / "state.json")
    weights = torch.load(path / "adapter.pt", weights_only=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if scaler is not None and (path / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "scaler.pt", weights_only=True))
    rng = path / f"rng-{rank}.pt"
    if rng.exists():  # a different world size resumes with fresh dropout streams
        set_rng_state(torch.load(rng, weights_only=False))
    return int(state["step"])
