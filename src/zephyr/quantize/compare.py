"""`--compare`: each quantized artifact against the fp32 and bf16 model it came from.

Per model, each measured in its own fresh process (so peak RSS is that model's alone): on-disk
size, peak RSS, greedy generation tokens/s, WikiText-2 test perplexity (sliding window), and
optionally hellaswag / arc_challenge / mmlu accuracy on the same items with 95% intervals
(through zephyr.eval). Disk MB and tok/s are zephyr.eval.measure's, the same as in the report's
Table 1. Timings are noisy on a shared CPU: read the ratios to fp32 measured in the same run, not
the absolute numbers.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zephyr.errors import ZephyrError
from zephyr.eval.measure import disk_mb, gen_speed
from zephyr.eval.report_table import quant_rows
from zephyr.io import read_json, write_json

TASKS = ("hellaswag", "arc_challenge", "mmlu")


@dataclass
class CompareConfig:
    ppl_tokens: int = 16384  # WikiText-2 test tokens scored (the whole file is ~290k)
    window: int = 512
    stride: int = 256
    gen_tokens: int = 64
    gen_runs: int = 2
    eval_limit: int = 0  # items per accuracy task; 0 skips the tasks
    seed: int = 0
    # auto|cpu|cuda|mps; quantized artifacts run on the CPU (torchao CPU layouts), so `auto`
    # measures every model on the CPU and the ratios compare like with like
    device: str = "auto"


def wikitext_ids(tok: Any, data_root: Path, n_tokens: int) -> list[int]:
    path = Path(data_root) / "wikitext-2" / "test.txt"
    if not path.exists():
        raise ZephyrError(
            f"{path} not found; pass --data-root pointing at a folder laid out like ../shared/data"
        )
    text = path.read_text(encoding="utf-8")
    if not n_tokens:
        return tok(text, add_special_tokens=False)["input_ids"]
    # tokenizing all ~290k tokens took most of a small run: tokenize a prefix with a margin
    # (BPE pieces far from the cut are the same), doubling it until it holds n_tokens + 64
    chars = n_tokens * 6
    while True:
        ids = tok(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) >= n_tokens + 64 or chars >= len(text):
            return ids[:n_tokens]
        chars *= 2


def wikitext_perplexity(model: Any, tok: Any, data_root: Path, cfg: CompareConfig) -> dict:
    """The eval stage's sliding-window token perplexity (zephyr.eval.engine.Scorer) on the first
    `ppl_tokens` tokens of WikiText-2's test.txt."""
    from zephyr.eval.engine import Scorer

    ids = wikitext_ids(tok, data_root, cfg.ppl_tokens)
    scorer = Scorer(model, tok, batch_size=4, progress=False)
    out = scorer.token_perplexity(tok.decode(ids), window=cfg.window, stride=cfg.stride)
    return {
        "ppl": out["token_perplexity"],
        "tokens": out["tokens"],
        "window": cfg.window,
        "stride": cfg.stride,
        "impl": "zephyr.eval.engine.Scorer.token_perplexity",
    }


def accuracy(model: Any, tok: Any, data_root: Path, cfg: CompareConfig) -> dict:
    """hellaswag / arc_challenge / mmlu through zephyr.eval (same seeded items for every model),
    with percentile-bootstrap 95% intervals over the items."""
    from zephyr.eval.bootstrap import ci
    from zephyr.eval.engine import Scorer
    from zephyr.eval.run import evaluate

    scorer = Scorer(model, tok, batch_size=8, progress=False)
    res = evaluate(
        (model, tok),
        list(TASKS),
        data_dir=data_root,
        limit=cfg.eval_limit,
        seed=cfg.seed,
        scorer=scorer,
    )
    out = {}
    for task, r in res["tasks"].items():
        metric = "acc_norm" if "acc_norm" in r["metrics"] else "acc"
        items = r["per_item"].get(metric, [])
        out[task] = {
            "metric": metric,
            "value": r["metrics"][metric],
            "n": r["n"],
            "ci95": list(ci(items)) if items else None,
        }
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's ru_maxrss survives fork + exec (a child of the 10 GB
    training process reports 10 GB), so read the memory map's own high-water mark instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(spec: str, dtype: str, data_root: Path, cfg: CompareConfig) -> dict:
    """Everything measured for one model, in this process (call it in a fresh one)."""
    import torch

    from zephyr.models import load_model

    t0 = time.perf_counter()
    from zephyr.device import place

    model, tok = load_model(spec, dtype=dtype)
    model = place(model, "cpu" if cfg.device == "auto" else cfg.device)
    load_s = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    ppl = wikitext_perplexity(model, tok, data_root, cfg)
    tps = gen_speed(model, tok, cfg.gen_tokens, cfg.gen_runs)["tokens_per_s"]
    acc = accuracy(model, tok, data_root, cfg) if cfg.eval_limit else {}
    return {
        "load_s": round(load_s, 2),
        "wikitext_ppl": ppl["ppl"],
        "ppl_detail": ppl,
        "tokens_per_s": tps,
        "peak_rss_mb": peak_rss_mb(),
        "tasks": acc,
        "threads": torch.get_num_threads(),
    }


def measure_in_subprocess(
    spec: str, dtype: str, data_root: Path, cfg: CompareConfig, out: Path
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "zephyr.quantize.compare",
        spec,
        dtype,
        str(data_root),
        json.dumps(asdict(cfg)),
        str(out),
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ZephyrError(
            f"measuring {spec} ({dtype}) failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    result = read_json(out)
    out.unlink()
    return result


def compare_models(
    source: str,
    artifacts: dict[str, str],
    out: Path,
    cfg: CompareConfig,
    data_root: Path,
    console: Console | None = None,
    note: str = "",
) -> dict:
    """fp32 and bf16 of `source`, then each artifact; writes `out` (compare.json) atomically."""
    from rich.progress import Progress

    console = console or Console(stderr=True)
    out = Path(out)
    rows: dict[str, dict] = {}
    runs = [("fp32", source, "float32"), ("bf16", source, "bfloat16")]
    runs += [(name, path, "float32") for name, path in artifacts.items()]
    fp32_mb = disk_mb(source)
    with Progress(console=console) as bar:
        task = bar.add_task("compare", total=len(runs))
        for label, spec, dtype in runs:
            m = measure_in_subprocess(
                spec, dtype, data_root, cfg, out.parent / f".{out.stem}-{label}.json"
            )
            size = fp32_mb / 2 if label == "bf16" else disk_mb(spec)
            meta = {}
            qjson = Path(spec) / "quantization.json"
            if qjson.exists():
                q = read_json(qjson)
                meta = {
                    k: q.get(k)
                    for k in (
                        "method",
                        "bits",
                        "group_size",
                        "embedding",
                        "weight_rel_error",
                        "outlier_fraction",
                        "skipped",
                        "seconds",
                        "lora",  # -lora: base, rank, parameters of the kept fine-tuning
                    )
                }
                meta["quantize_s"] = meta.pop("seconds")
            rows[label] = {"spec": spec, "disk_mb": size, **m, **meta}
            bar.advance(task)
    base = rows["fp32"]
    for r in rows.values():
        r["size_x_fp32"] = r["disk_mb"] / base["disk_mb"]
        r["ppl_x_fp32"] = r["wikitext_ppl"] / base["wikitext_ppl"]
        r["speed_x_fp32"] = r["tokens_per_s"] / base["tokens_per_s"]
    report = {
        "source": source,
        "config": asdict(cfg),
        "note": note or grid_note(source),
        "bf16_disk_mb_is": "computed as fp32 size / 2 (no bf16 copy is written)",
        "models": rows,
    }
    write_json(out, report)
    return report


def grid_note(source: str) -> str:
    if str(source) in ("smollm2-135m", "") or "smollm2-135m" in str(source):
        return (
            "M0 was unpacked from a Q4_1 GGUF (4-bit, blocks of 32): its weights already lie on a "
            "4-bit grid, so int4 at group 32 looks lossless here and says nothing about a trained model"
        )
    return ""


def print_table(report: dict, console: Console | None = None) -> None:
    """compare.json as a terminal table (the report's Table 2 cells), with its notes."""
    console = console or Console()
    cols, rows = quant_rows(report)
    t = Table(title=f"quantization vs fp32: {report['source']}")
    for col in cols:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    console.print(t)
    if any("(n=" in c for c in cols):
        console.print("accuracy: the same seeded items for every model; [95% percentile bootstrap]")
    if report.get("note"):
        console.print(f"[yellow]note:[/] {report['note']}")


def _main(argv: list[str]) -> None:
    spec, dtype, data_root, cfg_json, out = argv
    result = measure(spec, dtype, Path(data_root), CompareConfig(**json.loads(cfg_json)))
    write_json(out, result)


if __name__ == "__main__":
    _main(sys.argv[1:])
