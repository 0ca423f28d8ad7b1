"""Checkpoints: adapter weights, optimizer, scheduler, RNG states and the data position (step).

Each checkpoint is written into a staging directory, every file fsynced, then swapped into place
(`zephyr.io.swap_dir`), so a kill mid-write leaves the previous checkpoint intact; `resume` repairs
what a kill between the two renames left, skips an unreadable checkpoint for the one before it,
and refuses a world size other than the one that wrote it. Everything is loaded with
`torch.load(weights_only=True)`: the RNG states are stored as tensors and numbers, not pickles.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zephyr.errors import ZephyrError
from zephyr.io import fsync_dir, read_json, recover_dir, swap_dir, write_json


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """Every RNG stream as tensors and plain numbers (loadable with weights_only=True)."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _save(obj: Any, path: Path) -> None:
    """torch.save, flushed to disk before the directory holding it is renamed into place."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


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
    staging = root / f".{final.name}.tmp-staging"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    _save(rng_state(), staging / f"rng-{rank}.pt")
    if rank == 0:
        _save(trainable_state(model), staging / "adapter.pt")
        _save(optimizer.state_dict(), staging / "optimizer.pt")
        _save(scheduler.state_dict(), staging / "scheduler.pt")
        if scaler is not None:  # fp16 on CUDA: the loss scale resumes where it was
            _save(scaler.state_dict(), staging / "scaler.pt")
    barrier()
    if rank == 0:
        write_json(staging / "state.json", {"step": step, "world": world})  # fsynced too
        swap_dir(staging, final)
        for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(root)
    barrier()


def recover(root: Path) -> None:
    """Repair a kill inside `save`: an old copy moved aside comes back when its step is missing;
    leftover staging and `.old-*` directories (also the layout of earlier versions) are deleted."""
    if not root.is_dir():
        return
    for legacy in root.glob(".old-*"):  # earlier versions: .old-XXXX/step-N
        for step in legacy.glob("step-*"):
            if not (root / step.name).exists() and (step / "state.json").exists():
                os.replace(step, root / step.name)
        shutil.rmtree(legacy, ignore_errors=True)
    for staging in root.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    names = {p.name.split(".")[1] for p in root.glob(".step-*.*-*")}
    for name in names:
        recover_dir(root / name)


def latest(root: Path) -> Path | None:
    done = checkpoints(root)
    return done[-1] if done else None


def checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints (those with a state.json), oldest first."""
    return sorted(p for p in root.glob("step-*") if (p / "state.json").exists())


def _read(path: Path, rank: int, world: int) -> dict:
    """Every file of a checkpoint, read before any is applied (a torn one leaves the model as is)."""
    state = read_json(path / "state.json")
    saved = int(state.get("world", world))
    if saved != world:
        raise ZephyrError(
            f"checkpoint {path} was written by {saved} process(es), this run has {world}: the data "
            f"order and batch per step depend on it. Resume with {saved} process(es), or start "
            "over with --force"
        )
    out = {"step": int(state["step"])}
    for name in ("adapter", "optimizer", "scheduler"):
        out[name] = torch.load(path / f"{name}.pt", weights_only=True)
    out["rng"] = _read_rng(path / f"rng-{rank}.pt")
    scaler = path / "scaler.pt"
    out["scaler"] = torch.load(scaler, weights_only=True) if scaler.exists() else None
    return out


def _read_rng(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:  # a pickle of an earlier version (or a crafted one): never run
        return None


def apply(state: dict, model: Any, optimizer, scheduler, scaler: Any = None) -> int:
    """Copy a checkpoint read by `_read` into the model, optimizer, scheduler and RNGs."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["adapter"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if state["rng"] is not None:  # an unreadable RNG file resumes with fresh dropout streams
        set_rng_state(state["rng"])
    return state["step"]


def load(
    path: Path, model: Any, optimizer, scheduler, rank: int, world: int = 1, scaler: Any = None
) -> int:
    """Apply one checkpoint; returns its step (refuses a different world size)."""
    return apply(_read(path, rank, world), model, optimizer, scheduler, scaler)


def resume(
    root: Path,
    model: Any,
    optimizer,
    scheduler,
    rank: int,
    world: int,
    barrier: Callable[[], Any] = lambda: None,
    warn: Callable[[str], Any] = lambda msg: None,
    scaler: Any = None,
) -> tuple[Path | None, int]:
    """Load the newest readable checkpoint under `root`: (its path, its step), or (None, 0) when
    there is none. A torn one is skipped for the one before; none readable at all is an error."""
    if rank == 0:
        recover(root)
    barrier()
    found = checkpoints(root)
    for path in reversed(found):
        try:
            state = _read(path, rank, world)
        except ZephyrError:
            raise
        except Exception as e:  # a torn file fails in many ways inside torch.load / pickle
            warn(
                f"checkpoint {path.name} is unreadable ({type(e).__name__}); trying the one before"
            )
            continue
        return path, apply(state, model, optimizer, scheduler, scaler)
    if found:
        raise ZephyrError(
            f"no checkpoint in {root} can be read ({', '.join(p.name for p in found)}); delete "
            "them to train from the start, or rerun with --force"
        )
    return None, 0
