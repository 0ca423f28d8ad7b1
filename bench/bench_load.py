"""Model loading: the one-time GGUF conversion vs a cached load, and bf16 vs fp32 forward speed.

    .venv/bin/python bench/bench_load.py

Each load runs in a fresh process (imports excluded from the load figure, printed apart).
The cached load must take under 5 s. Last line: key=value pairs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers  # noqa: F401
from zephyr.models import load_model
t1 = time.perf_counter()
model, tok = load_model("smollm2-135m", dtype=sys.argv[1])
t2 = time.perf_counter()
ids = tok(["The capital of France is Paris, and the capital of Italy is"] * 4, return_tensors="pt").input_ids
ids = ids.repeat(1, 16)  # 4 x ~256 tokens
with torch.inference_mode():
    model(ids)  # warm-up
    t3 = time.perf_counter()
    for _ in range(3):
        model(ids)
    t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "forward_s": (t4 - t3) / 3}))
"""


def child(home: str, dtype: str) -> dict:
    env = {**os.environ, "ZEPHYR_HOME": home, "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, dtype], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        first = child(home, "float32")  # converts the GGUF into this empty cache
        cached = child(home, "float32")
        bf16 = child(home, "bfloat16")
    print(f"first load (GGUF conversion): {first['load_s']:.2f} s")
    print(
        f"cached load:                  {cached['load_s']:.2f} s  (imports {cached['import_s']:.2f} s apart)"
    )
    print(f"forward 4x256 fp32 {cached['forward_s']:.3f} s, bf16 {bf16['forward_s']:.3f} s")
    print(
        f"convert_s={first['load_s']:.2f} cached_load_s={cached['load_s']:.2f} "
        f"cache_speedup={first['load_s'] / cached['load_s']:.1f} "
        f"cached_under_5s={cached['load_s'] < 5} "
        f"bf16_forward_speedup={cached['forward_s'] / bf16['forward_s']:.2f}"
    )


if __name__ == "__main__":
    main()
