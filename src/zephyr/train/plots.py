"""Loss / validation loss / LR (and reward accuracy) curves from metrics.jsonl, as PNGs."""

from __future__ import annotations

import io
from pathlib import Path

from zephyr.io import atomic_write


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def plot_metrics(rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list, list]:
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    written = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*series("loss"), label="train loss", lw=1)
    ax.plot(*series("val_loss"), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    _save(fig, out_dir / "loss.png")
    written.append(out_dir / "loss.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.plot(*series("lr"))
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    _save(fig, out_dir / "lr.png")
    written.append(out_dir / "lr.png")
    plt.close(fig)

    if any("reward_acc" in r for r in rows):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(*series("reward_acc"), "o-", label="val reward accuracy")
        ax.plot(*series("margin"), "s-", label="val mean margin")
        ax.set_xlabel("step")
        ax.legend()
        _save(fig, out_dir / "rewards.png")
        written.append(out_dir / "rewards.png")
        plt.close(fig)
    return written
