"""Checkpoints under hostile and broken input (issue 14 items 12-13): no pickle runs on load, files
are fsynced before the rename, a kill between the two renames is repaired, a torn metrics line is
skipped, a world-size change is refused, an unreadable checkpoint falls back to the one before."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from zephyr.errors import ZephyrError
from zephyr.train import checkpoint


def parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


def save(root: Path, step: int, model=None, world: int = 1, keep: int = 3) -> None:
    model, opt, sched = parts() if model is None else (model, *parts()[1:])
    checkpoint.save(root, step, model, opt, sched, 0, world, lambda: None, keep)


def resume(root: Path, world: int = 1, warn=lambda m: None):
    model, opt, sched = parts(seed=1)
    path, step = checkpoint.resume(root, model, opt, sched, 0, world, warn=warn)
    return path, step, model


class Payload:
    """Unpickling this object creates a file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_rng_file_runs_no_code(tmp_path):
    save(tmp_path, 1)
    marker = tmp_path / "pwned"
    torch.save({"torch": Payload(marker)}, tmp_path / "step-0000001" / "rng-0.pt")
    _, step, _ = resume(tmp_path)
    assert step == 1 and not marker.exists()


def test_rng_state_round_trips_through_weights_only(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    save(tmp_path, 1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    resume(tmp_path)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    torch.load(tmp_path / "step-0000001" / "rng-0.pt", weights_only=True)  # no pickle needed


def test_every_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        name = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if name.name.endswith(".tmp"):  # atomic_write: fsync under the temp name, then rename
            name = name.with_name(name.name[1:].rsplit(".", 2)[0])
        synced.append(str(name))
        real_fsync(fd)

    def replace(src, dst):
        if Path(dst).name.startswith("step-"):
            files = {str(p) for p in Path(src).iterdir()}
            assert files <= set(synced), files - set(synced)
            assert str(src) in synced  # the directory's entries too
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save(tmp_path, 1)
    assert (tmp_path / "step-0000001" / "state.json").exists()


def test_a_kill_between_the_two_renames_is_repaired(tmp_path, monkeypatch):
    save(tmp_path, 1)
    save(tmp_path, 2)
    real_replace = os.replace

    def killed(src, dst):  # the second rename (staging -> step) never happens
        if ".tmp-" in Path(src).name:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)  # the same step again: the finished one is moved aside first
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (tmp_path / "step-0000002").exists()
    path, step, _ = resume(tmp_path)
    assert step == 2 and path == tmp_path / "step-0000002"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000001", "step-0000002"]


def test_leftovers_of_earlier_versions_are_cleaned(tmp_path):
    save(tmp_path, 1)
    (tmp_path / ".old-abc123").mkdir()
    os.replace(tmp_path / "step-0000001", tmp_path / ".old-abc123" / "step-0000001")
    (tmp_path / ".staging-0000002").mkdir()
    _, step, _ = resume(tmp_path)
    assert step == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["step-0000001"]


def test_a_world_size_change_is_refused(tmp_path):
    save(tmp_path, 1, world=2)
    with pytest.raises(ZephyrError, match=r"written by 2 process\(es\), this run has 1"):
        resume(tmp_path, world=1)


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(tmp_path):
    model, _, _ = parts(seed=5)
    save(tmp_path, 1, model=model)
    save(tmp_path, 2)
    (tmp_path / "step-0000002" / "adapter.pt").write_bytes(b"torn")
    warned: list[str] = []
    path, step, resumed = resume(tmp_path, warn=warned.append)
    assert step == 1 and "step-0000002" in warned[0]
    assert torch.equal(resumed.weight, model.weight)


def test_a_torn_last_metrics_line_is_skipped_on_resume(tmp_path):
    from zephyr.train.loop import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')
    _truncate_metrics(path, 2)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:2]
    path.write_text('{"step": 1, "lo\n' + json.dumps(rows[1]) + "\n")
    with pytest.raises(ZephyrError, match=r"metrics\.jsonl:1 is not valid JSON"):
        _truncate_metrics(path, 2)  # a broken line in the middle is not a torn write
