"""Exact match on the project's held-out synthetic STEM set (worked solutions ending `Answer: v`).

Items: option `file` (a synth_test.jsonl), else `synth_test.jsonl` in `--data-dir` (a data stage
output), else `zephyr.data.synth.generate("test", n, seed)`. The prompt is the row's chat turns
without the answer, through the chat template with the assistant header, as training renders it;
greedy decoding until <|im_end|>. Score: `schema.answers_match(generation, answer_text)` (the value
after the last `Answer:` line, normalised: case, spaces, thousands separators, 2.50 == 2.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr.data.schema import answers_match, extract_answer, sft_messages
from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen

STOP = ["<|im_end|>", "<|endoftext|>"]
DEFAULT_N = 200  # items generated when no synth_test.jsonl is found


def load_rows(cfg: EvalConfig) -> tuple[list[dict], str]:
    """The held-out rows and where they came from."""
    file = cfg.options.get("file")
    if file:
        return gen.read_rows(Path(file), "synthetic test set (option `file`)"), str(file)
    local = Path(cfg.data_dir) / "synth_test.jsonl"
    if local.is_file():
        return gen.read_rows(local, "synthetic test set"), str(local)
    try:
        from zephyr.data.synth import generate
    except ImportError:
        raise ZephyrError(
            f"no synth_test.jsonl in {cfg.data_dir} and zephyr.data.synth is unavailable; "
            "pass the data stage's output as --data-dir or set the task option `file`"
        ) from None
    n = int(cfg.options.get("n", DEFAULT_N))
    return list(
        generate("test", n, cfg.seed)
    ), f"zephyr.data.synth.generate('test', {n}, {cfg.seed})"


def prompts_and_golds(tokenizer: Any, rows: list[dict]) -> tuple[list[str], list[str]]:
    prompts, golds = [], []
    for row in rows:
        messages = sft_messages(row)
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        prompts.append(gen.chat_prompt(tokenizer, messages))
        golds.append(str(row.get("answer_text") or extract_answer(row.get("output", "")) or ""))
    return prompts, golds


def generations(
    scorer: Any, cfg: EvalConfig
) -> tuple[list[tuple[int, dict]], list[str], list[str], str]:
    """(picked rows, prompts, greedy generations, source): shared with the bertscore task."""
    rows, source = load_rows(cfg)
    picked = gen.subset(rows, cfg.limit, cfg.seed)
    prompts, _ = prompts_and_golds(scorer.tokenizer, [r for _, r in picked])
    max_new = int(cfg.options.get("max_new_tokens", 256))
    outputs = gen.generate(scorer, prompts, max_new, STOP, gen.use_calculator(scorer, cfg))
    return picked, prompts, outputs, source


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    picked, prompts, outputs, source = generations(scorer, cfg)
    _, golds = prompts_and_golds(scorer.tokenizer, [r for _, r in picked])
    em = [float(answers_match(o, g)) for o, g in zip(outputs, golds, strict=True)]
    has_answer = [float(extract_answer(o) is not None) for o in outputs]
    gen.write_log(
        cfg,
        "synthetic",
        [
            {
                "index": i,
                "id": r.get("id"),
                "family": r.get("family"),
                "prompt": p,
                "output": o,
                "pred": extract_answer(o),
                "gold": g,
                "exact_match": e,
            }
            for (i, r), p, o, g, e in zip(picked, prompts, outputs, golds, em, strict=True)
        ],
    )
    max_new = int(cfg.options.get("max_new_tokens", 256))
    families: dict[str, list[float]] = {}
    for (_, r), e in zip(picked, em, strict=True):
        families.setdefault(str(r.get("family", "?")), []).append(e)
    return TaskResult(
        "synthetic",
        {"exact_match": gen.mean(em), "answer_rate": gen.mean(has_answer)},
        f"0-shot chat template, greedy, max {max_new} new tokens, stop <|im_end|>; exact_match = "
        "schema.answers_match on the last 'Answer:' line (normalised); answer_rate = share of "
        "generations with an 'Answer:' line",
        len(em),
        {"exact_match": em, "answer_rate": has_answer},
        {
            "source": source,
            "by_family": {f: gen.mean(v) for f, v in sorted(families.items())},
            "calculator": gen.use_calculator(scorer, cfg),
        },
    )
