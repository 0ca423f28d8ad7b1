"""`report_to: [tensorboard]`: the metrics rows reach TensorBoard (offline, files only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zephyr.errors import ZephyrError
from zephyr.train.config import SFTConfig

FIXTURES = Path(__file__).parent / "fixtures" / "train"


def quick(**kw) -> SFTConfig:
    base = dict(lr=1e-2, micro_batch=4, max_steps=3, bf16=False, max_seq_len=96, merge=False)
    return SFTConfig(**{**base, "max_val": 4, **kw})


def test_tensorboard_gets_every_logged_loss(tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zephyr.train.sft import train_sft

    out = tmp_path / "sft"
    train_sft(quick(report_to=["tensorboard"]), str(tiny_model), FIXTURES, out, 0)
    events = list((out / "tracking").rglob("events.out.tfevents.*"))
    assert events, list(out.rglob("*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("loss")}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(logged) == sorted(want) == [1, 2, 3]
    for step, loss in want.items():
        assert abs(logged[step] - loss) < 1e-5
    assert {e.step for e in acc.Scalars("val_loss")} == {0, 3}


def test_unknown_or_missing_tracker_is_named(tiny_model, tmp_path, monkeypatch):
    from zephyr.train import tracking
    from zephyr.train.sft import train_sft

    with pytest.raises(ZephyrError, match="report_to names 'neptune'"):
        train_sft(quick(report_to=["neptune"]), str(tiny_model), FIXTURES, tmp_path / "a", 0)
    monkeypatch.setitem(tracking.TRACKERS, "wandb", ("no_such_module_zephyr",))
    with pytest.raises(ZephyrError, match="'wandb'.*pip install wandb"):
        train_sft(quick(report_to=["wandb"]), str(tiny_model), FIXTURES, tmp_path / "b", 0)
