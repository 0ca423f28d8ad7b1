"""`--compare`: each quantized artifact against the fp32 and bf16 model it came from.

Per model, each measured in its own fresh process (so peak RSS is that model's alone): on-disk
size, peak RSS, greedy generation tokens/s, WikiText-2 test perplexity (sliding window), and
optionally hellaswag / arc_challenge / mmlu accuracy on the same items with 95% intervals
(through zephyr.eval when it is installed). Timings are noisy on a shared CPU: read the ratios
to fp32 measured in the same run, not the absolute numbers.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zephyr.errors import ZephyrError
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


def perplexity(model: Any, ids: list[int], window: int = 512, stride: int = 256) -> dict:
    """Token perplexity with a sliding window: each window scores only its last `stride` new
    tokens, with up to `window - stride` tokens of context (the HF perplexity recipe)."""
    import torch

    nll, n, prev_end = 0.0, 0, 0
    t = torch.tensor(ids, device=model.device)
    with torch.no_grad():
        for begin in range(0, len(ids) - 1, stride):
            end = min(begin + window, len(ids))
            x = t[begin:end].unsqueeze(0)
            logits = model(x).logits.float()[0, :-1]
            target = t[begin + 1 : end]
            new = end - max(prev_end, begin + 1)  # tokens scored for the first time
            lp = torch.log_softmax(logits[-new:], dim=-1).gather(1, target[-new:, None])
            nll -= float(lp.sum())
            n += new
            prev_end = end
            if end == len(ids):
                break
    return {"ppl": math.exp(nll / n), "tokens": n, "window": window, "stride": stride}


def own_or_eval_perplexity(model: Any, tok: Any, data_root: Path, cfg: CompareConfig) -> dict:
    """The eval stage's sliding-window token perplexity (zephyr.eval.engine.Scorer) when it is
    installed, on the first `ppl_tokens` tokens of test.txt; else ours. Says which."""
    ids = wikitext_ids(tok, data_root, cfg.ppl_tokens)
    try:
        from zephyr.eval.engine import Scorer
    except ImportError:
        return {
            **perplexity(model, ids, cfg.window, cfg.stride),
            "impl": "zephyr.quantize.compare.perplexity",
        }
    scorer = Scorer(model, tok, batch_size=4, progress=False)
    out = scorer.token_perplexity(tok.decode(ids), window=cfg.window, stride=cfg.stride)
    return {
        "ppl": out["token_perplexity"],
        "tokens": out["tokens"],
        "window": cfg.window,
        "stride": cfg.stride,
        "impl": "zephyr.eval.engine.Scorer.token_perplexity",
    }


def generation_speed(model: Any, tok: Any, n_tokens: int, runs: int) -> float:
    """Greedy tokens/s for exactly `n_tokens` new tokens after a chat prompt (median of runs)."""
    import torch

    msgs = [{"role": "user", "content": "Explain why the sky is blue in three sentences."}]
    ids = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    kw = dict(do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=None)
    with torch.no_grad():
        model.generate(**ids, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model.generate(**ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens, **kw)
            times.append(time.perf_counter() - t0)
    return n_tokens / statistics.median(times)


def accuracy(model: Any, tok: Any, data_root: Path, cfg: CompareConfig) -> dict:
    """hellaswag / arc_challenge / mmlu through zephyr.eval (same seeded items for every model),
    with percentile-bootstrap 95% intervals over the items."""
    try:
        from zephyr.eval.bootstrap import ci
        from zephyr.eval.engine import Scorer
        from zephyr.eval.run import evaluate
    except ImportError as e:
        return {"skipped": f"zephyr.eval not available ({e})"}
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
    ppl = own_or_eval_perplexity(model, tok, data_root, cfg)
    tps = generation_speed(model, tok, cfg.gen_tokens, cfg.gen_runs)
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


def disk_mb(spec: str) -> float:
    from zephyr.models import resolve
    from zephyr.quantize.artifact import artifact_bytes

    return artifact_bytes(resolve(spec)) / 2**20


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


def _acc_cell(r: dict, task: str) -> str:
    a = (r.get("tasks") or {}).get(task)
    if not isinstance(a, dict) or "value" not in a:
        return ""
    lo, hi = a["ci95"] or (float("nan"), float("nan"))
    return f"{a['value']:.3f} [{lo:.2f},{hi:.2f}]"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """compare.json as text cells, one row per model: size, RSS, speed, perplexity (each with its
    ratio to fp32), the quantization's weight error and seconds, and accuracy [95% CI] when
    eval_limit was set. The CLI's table and the report's Table 2 both print these."""
    rows = report["models"]
    tasks = [t for t in TASKS if any(_acc_cell(r, t) for r in rows.values())]
    n = {t: next(r["tasks"][t]["n"] for r in rows.values() if _acc_cell(r, t)) for t in tasks}
    cols = ["model", "disk MB", "x fp32", "peak RSS MB", "tok/s", "x fp32", "wikitext ppl"]
    cols += ["x fp32", "weight err", "quant s"] + [f"{k} (n={n[k]})" for k in tasks]
    out = []
    for label, r in rows.items():
        err, secs = r.get("weight_rel_error"), r.get("quantize_s")
        out.append(
            [
                label,
                f"{r['disk_mb']:.1f}",
                f"{r['size_x_fp32']:.3f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['tokens_per_s']:.1f}",
                f"{r['speed_x_fp32']:.2f}",
                f"{r['wikitext_ppl']:.3f}",
                f"{r['ppl_x_fp32']:.4f}",
                "" if err is None else f"{err:.2e}",
                "" if secs is None else f"{secs:.0f}",
                *[_acc_cell(r, k) for k in tasks],
            ]
        )
    return cols, out


def print_table(report: dict, console: Console | None = None) -> None:
    """compare.json as a terminal table (`table_rows`), with its notes."""
    console = console or Console()
    cols, rows = table_rows(report)
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
