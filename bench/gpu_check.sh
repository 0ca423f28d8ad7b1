#!/usr/bin/env bash
# The GPU check (issue 15): on a CUDA machine, the demo recipe's SFT and DPO for 20 steps each on
# SmolLM2-135M, then hellaswag and gsm8k on 50 items each; prints losses and tokens/s. < 8 min.
#
#   bash bench/gpu_check.sh                       # needs torch with CUDA; writes under runs/gpu-check
#   DEVICE=cpu STEPS=2 LIMIT=2 bash bench/gpu_check.sh   # a plumbing check without a GPU
#
# Env: PY (python, default .venv/bin/python or python), DEVICE (cuda), STEPS (20), LIMIT (50),
# OUT (runs/gpu-check), DATA_ROOT (../shared/data). Last line: key=value pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-20}
LIMIT=${LIMIT:-50}
OUT=${OUT:-runs/gpu-check}
DATA_ROOT=${DATA_ROOT:-../shared/data}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
Z() { "$PY" -m zephyr.cli "$@"; }

if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import sys, torch; ok = torch.cuda.is_available(); print("cuda:", torch.cuda.get_device_name(0) if ok else "none", "| torch", torch.__version__, "| bf16:", ok and torch.cuda.is_bf16_supported()); sys.exit(0 if ok else 3)' \
    || { echo "gpu_check: torch sees no CUDA GPU (install a CUDA build of torch); nothing was run" >&2; exit 3; }
fi
rm -rf "$OUT" && mkdir -p "$OUT"
start=$SECONDS
Z data build recipes/demo.yaml --out "$OUT/data" --data-root "$DATA_ROOT" >/dev/null
Z train sft recipes/demo.yaml --data "$OUT/data" --out "$OUT/sft" --model smollm2-135m \
  --device "$DEVICE" --set max_steps="$STEPS"
Z train dpo recipes/demo.yaml --data "$OUT/data" --out "$OUT/dpo" --model "$OUT/sft/model" \
  --device "$DEVICE" --set max_steps="$STEPS"
train_s=$((SECONDS - start))
Z eval "$OUT/dpo/model" --tasks hellaswag,gsm8k --limit "$LIMIT" --device "$DEVICE" \
  --data-dir "$DATA_ROOT" --json "$OUT/eval.json" >/dev/null
"$PY" - "$OUT" "$train_s" "$((SECONDS - start))" <<'PYEOF'
import json, statistics, sys
from pathlib import Path

out, train_s, total_s = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
kv = {}
for stage in ("sft", "dpo"):
    rows = [json.loads(x) for x in (out / stage / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    info = json.loads((out / stage / "train.json").read_text())
    print(f"{stage}: {info.get('precision')} on {info.get('device')}; losses by step:")
    print("  " + " ".join(f"{r['step']}:{r['loss']:.4f}" for r in steps))
    tok_s = statistics.median(r["tok_s"] for r in steps[1:] or steps)  # step 1 pays warm-up
    print(f"  median tokens/s (steps 2..): {tok_s:.0f}; val_loss {rows[0].get('val_loss'):.4f} -> {rows[-1].get('val_loss'):.4f}")
    kv.update({f"{stage}_loss_first": steps[0]["loss"], f"{stage}_loss_last": steps[-1]["loss"], f"{stage}_tok_s": tok_s})
res = json.loads((out / "eval.json").read_text())
for task, r in res["tasks"].items():
    shown = {k: round(v, 4) for k, v in r["metrics"].items() if isinstance(v, (int, float))}
    print(f"eval {task} (n={r['n']}): {shown}")
    key = "acc_norm" if "acc_norm" in r["metrics"] else next(iter(r["metrics"]))
    kv[f"{task}_{key}"] = r["metrics"][key]
kv.update(train_s=train_s, total_s=total_s)
print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items()))
PYEOF
