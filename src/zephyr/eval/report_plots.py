"""The report's figures as PNGs: training curves per stage, and the eval metrics per model."""

from __future__ import annotations

import io
from pathlib import Path

from zephyr.io import atomic_write

STAGE_TITLES = {"sft": "SFT (M1)", "dpo": "DPO (M2)", "kto": "KTO (M2-kto)"}


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float) and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_training(stage: str, rows: list[dict], out_dir: Path) -> Path | None:
    """One figure per training stage: loss + val loss, learning rate, and (preference stages)
    validation reward accuracy and margin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any("loss" in r for r in rows):
        return None
    rewards = any("reward_acc" in r for r in rows)
    n = 3 if rewards else 2
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2))
    ax = axes[0]
    x, y = _series(rows, "loss")
    ax.plot(x, y, lw=1, color="#1f77b4", label="train loss")
    x, y = _series(rows, "val_loss")
    ax.plot(x, y, "o-", color="#d62728", ms=4, label="val loss")
    ax.set(xlabel="step", ylabel="loss", title="loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(*_series(rows, "lr"), color="#2ca02c")
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    if rewards:
        ax = axes[2]
        x, y = _series(rows, "reward_acc")
        ax.plot(x, y, "o-", color="#9467bd", ms=4, label="val reward accuracy")
        ax.set(
            xlabel="step",
            ylabel="reward accuracy",
            title="reward accuracy (val)",
            ylim=(-0.02, 1.02),
        )
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        x, y = _series(rows, "margin")
        if x:
            twin = ax.twinx()
            twin.plot(x, y, "s--", color="#8c564b", ms=3, label="val margin")
            twin.set_ylabel("mean margin")
            twin.legend(fontsize=8, loc="lower right")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"training: {STAGE_TITLES.get(stage, stage)}", fontsize=11)
    fig.tight_layout()
    path = _save(fig, out_dir / f"train_{stage}.png")
    plt.close(fig)
    return path


def plot_eval(
    columns: list[tuple[str, str, str]], models: list[str], cells: dict, out_dir: Path
) -> Path | None:
    """Small multiples: one panel per metric, a bar per model with its 95% bootstrap interval.

    columns: (task, metric, label); cells[(model, task, metric)] = (value, (lo, hi) | None),
    already in display units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in columns if any((m, c[0], c[1]) in cells for m in models)]
    if not cols:
        return None
    per_row = 4
    rows = (len(cols) + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, per_row, figsize=(3.3 * per_row, 2.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (task, metric, label) in enumerate(cols):
        ax = axes[k // per_row][k % per_row]
        xs, ys, errs, cs = [], [], [[], []], []
        for j, m in enumerate(models):
            if (m, task, metric) not in cells:
                continue
            v, bounds = cells[(m, task, metric)]
            xs.append(m)
            ys.append(v)
            lo, hi = bounds if bounds else (v, v)
            errs[0].append(max(v - lo, 0.0))
            errs[1].append(max(hi - v, 0.0))
            cs.append(colors[j % len(colors)])
        ax.bar(range(len(xs)), ys, yerr=errs, color=cs, capsize=3, alpha=0.85)
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(cols), rows * per_row):
        axes[k // per_row][k % per_row].axis("off")
    fig.suptitle("eval metrics per model (bars: 95% bootstrap interval)", fontsize=11)
    fig.tight_layout()
    path = _save(fig, out_dir / "eval.png")
    plt.close(fig)
    return path


def plot_overlay(stage: str, curves: list[tuple[str, list[dict]]], out_dir: Path) -> Path | None:
    """One stage's training curves of several runs on shared axes, one colour per run.

    SFT: train loss (line) and validation loss (markers), and the learning rate: cosine vs
    constant schedules side by side (the seeds' Figures 2-3). DPO / KTO: train and validation
    loss, and validation reward accuracy: DPO from M0 vs from M1 (the seeds' Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(name, rows) for name, rows in curves if any("loss" in r for r in rows)]
    if not curves:
        return None
    rewards = stage != "sft" and any("reward_acc" in r for _, rs in curves for r in rs)
    second = "reward_acc" if rewards else "lr"
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, rows) in enumerate(curves):
        c = colors[k % len(colors)]
        axes[0].plot(*_series(rows, "loss"), lw=1, color=c, alpha=0.8, label=f"{name} train")
        x, y = _series(rows, "val_loss")
        if x:
            axes[0].plot(x, y, "o--", color=c, ms=4, label=f"{name} val")
        x, y = _series(rows, second)
        axes[1].plot(x, y, "o-" if second == "reward_acc" else "-", color=c, ms=4, label=name)
    axes[0].set(xlabel="step", ylabel="loss", title="loss (line: train, markers: validation)")
    if second == "reward_acc":
        axes[1].set(xlabel="step", ylabel="reward accuracy", ylim=(-0.02, 1.02))
        axes[1].set_title("reward accuracy (validation pairs)")
        axes[1].axhline(0.5, color="gray", lw=0.8, ls=":")
    else:
        axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate schedule")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"training: {stage.upper()}, {len(curves)} runs overlaid", fontsize=11)
    fig.tight_layout()
    path = _save(fig, out_dir / f"train_{stage}.png")
    plt.close(fig)
    return path
