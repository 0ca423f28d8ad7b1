"""Experiment tracking through accelerate's trackers: a training section's `report_to:` list.

    sft:
      report_to: [tensorboard]      # or trackio, wandb, mlflow (each needs its package installed)

Every logged metrics row (the rows of metrics.jsonl) is sent with its step; the run is named after
the stage (`zephyr-sft`, `zephyr-dpo`...) and TensorBoard writes under `<out>/tracking/`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

# tracker name -> modules any of which provides it (tensorboard: torch's writer needs either)
TRACKERS: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
}


def check(report_to: list[str]) -> list[str]:
    """The tracker names, each known and installed (accelerate would silently drop a missing one)."""
    for name in report_to:
        if name not in TRACKERS:
            raise ZephyrError(
                f"report_to names '{name}'; choose from {', '.join(TRACKERS)} (or leave it empty)"
            )
        if not any(importlib.util.find_spec(m) for m in TRACKERS[name]):
            raise ZephyrError(
                f"report_to names '{name}' but its package is not installed; pip install {name}"
            )
    return list(report_to)


def flat_config(cfg: Any) -> dict[str, Any]:
    """The section as flat scalars (`lora.r`, lists as text): what TensorBoard's hparams accept."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (int, float, str, bool)):
            out[prefix[:-1]] = value
        else:
            out[prefix[:-1]] = str(value)

    walk("", dataclasses.asdict(cfg))
    return out


def start(accelerator: Any, cfg: Any, out_dir: Path, kind: str) -> None:
    """Open the trackers the Accelerator was built with (`log_with`), the section as config."""
    accelerator.init_trackers(f"zephyr-{kind}", config=flat_config(cfg))


def tracking_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "tracking"
