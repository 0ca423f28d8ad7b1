"""Issue 13's tables from `zephyr eval --json` files: calculator on/off, letter bias before/after.

    python bench/tutor_tables.py --synth-on ON.json --synth-off OFF.json --mcqa M1=a.json M0=b.json

Exact match and accuracy with 95% percentile-bootstrap intervals over the items (paired where
two runs score the same items); the letter shares with 95% Wilson intervals (from the task).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from zephyr.eval.bootstrap import ci


def task(path: str, name: str) -> dict:
    return json.load(open(path))["tasks"][name]


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def calculator_table(on_path: str, off_path: str) -> str:
    on, off = task(on_path, "synthetic"), task(off_path, "synthetic")
    a = np.array(on["per_item"]["exact_match"])
    b = np.array(off["per_item"]["exact_match"])
    ratio = ci(np.stack([a, b], 1), lambda m: m[:, 0].mean() / max(m[:, 1].mean(), 1e-9))
    diff = ci(a - b)
    lines = [
        "| calculator | exact match (%) | 95% CI | n |",
        "|---|---|---|---|",
        f"| off | {pct(b.mean())} | [{pct(ci(b)[0])}, {pct(ci(b)[1])}] | {len(b)} |",
        f"| on | {pct(a.mean())} | [{pct(ci(a)[0])}, {pct(ci(a)[1])}] | {len(a)} |",
        "",
        f"on - off: {pct(a.mean() - b.mean())} points [{pct(diff[0])}, {pct(diff[1])}]; "
        f"on / off: {a.mean() / max(b.mean(), 1e-9):.2f}x [{ratio[0]:.2f}, {ratio[1]:.2f}]",
        "",
        "| family | off | on |",
        "|---|---|---|",
    ]
    fam_on, fam_off = on["extra"]["by_family"], off["extra"]["by_family"]
    lines += [f"| {f} | {pct(fam_off[f])} | {pct(fam_on[f])} |" for f in sorted(fam_on)]
    return "\n".join(lines)


def bias_table(label: str, path: str) -> str:
    t = task(path, "mcqa_letter")
    rows = [f"**{label}** ({t['n']} items, {t['extra']['source']})", ""]
    rows += ["| scoring | acc (%) | 95% CI |", "|---|---|---|"]
    for key, what in (("acc", "single pass"), ("acc_cyclic", "cyclic"), ("acc_pride", "PriDe")):
        lo, hi = ci(t["per_item"][key])
        rows.append(f"| {what} | {pct(t['metrics'][key])} | [{pct(lo)}, {pct(hi)}] |")
    paired = ci(np.array(t["per_item"]["acc_cyclic"]) - np.array(t["per_item"]["acc"]))
    rows += ["", f"cyclic - single pass: [{pct(paired[0])}, {pct(paired[1])}] points", ""]
    letters = [k for k, v in t["extra"]["letters"].items() if v["gold"] or v["pred"]]
    rows += ["| letter | gold | single pass | cyclic | PriDe |", "|---|---|---|---|---|"]
    for k in letters:
        cells = [pct(t["extra"]["letters"][k]["gold"])]
        for table in ("letters", "letters_cyclic", "letters_pride"):
            v = t["extra"][table][k]
            cells.append(f"{pct(v['pred'])} [{pct(v['pred_ci'][0])}, {pct(v['pred_ci'][1])}]")
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    prior = ", ".join(f"{k} {v:.2f}" for k, v in t["extra"]["pride_prior"].items())
    rows += ["", f"PriDe prior (from {t['extra']['pride_estimate_items']} items): {prior}"]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth-on")
    ap.add_argument("--synth-off")
    ap.add_argument("--mcqa", nargs="*", default=[], help="LABEL=results.json")
    args = ap.parse_args()
    if args.synth_on and args.synth_off:
        print(calculator_table(args.synth_on, args.synth_off), end="\n\n")
    for item in args.mcqa:
        label, path = item.split("=", 1)
        print(bias_table(label, path), end="\n\n")


if __name__ == "__main__":
    main()
