"""DialogRPT score of the model's own replies (Gao et al. 2020, `microsoft/DialogRPT-updown`).

Items: option `file` (JSONL of preference rows `prompt` [+ `chosen`], or SFT rows), else
`pref_val.jsonl` in `--data-dir` (the data stage's held-out pairs). The model answers each prompt
greedily (chat template with the assistant header, max `max_new_tokens` = 128, stop <|im_end|>).

Ranker: option `model` (default `microsoft/DialogRPT-updown`): a local directory, or a hub id
already in the Hugging Face cache or downloadable; loaded with transformers'
AutoModelForSequenceClassification (a GPT-2 with one output logit). Input as on the model card:
the context turns joined by `<|endoftext|>`, then `<|endoftext|>` and the reply, left-truncated to
`max_len` tokens; score = sigmoid(logit), the predicted chance that the reply draws more upvotes
than downvotes. Scored one pair at a time (GPT-2 has no pad token: no padding, no ambiguity).

Metrics: `updown` = mean score of the model's replies; `win_vs_chosen` (when the rows have a
`chosen` reply) = share of items where the model's reply outscores the dataset's chosen reply
(ties 0.5).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zephyr.data.schema import prompt_messages, sft_messages
from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen

DEFAULT_MODEL = "microsoft/DialogRPT-updown"
STOP = ["<|im_end|>", "<|endoftext|>"]
SEP = "<|endoftext|>"
_RANKERS: dict[str, tuple[Any, Any]] = {}  # one ranker per process, shared across models

HOW_TO_PROVIDE = (
    "download it on a connected machine (`huggingface-cli download microsoft/DialogRPT-updown "
    "--local-dir DialogRPT-updown`), copy that folder here and pass `--dialogrpt-model "
    "DialogRPT-updown` to `zephyr eval` (recipes: eval.options.dialogrpt.model)"
)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false")


def load_ranker(spec: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of the DialogRPT ranker: a local dir, the hub cache, or the hub."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = str(spec or DEFAULT_MODEL)
    if spec in _RANKERS:
        return _RANKERS[spec]
    path = Path(spec).expanduser()
    looks_local = path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ZephyrError(f"DialogRPT model {path} has no config.json; {HOW_TO_PROVIDE}")
    try:
        kw = {"local_files_only": True} if _offline() and not looks_local else {}
        tok = AutoTokenizer.from_pretrained(str(path) if looks_local else spec, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path) if looks_local else spec, **kw
        )
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ZephyrError(
            f"the DialogRPT ranker '{spec}' is not available here ({reason}); {HOW_TO_PROVIDE}"
        ) from None
    if model.config.num_labels != 1:
        raise ZephyrError(
            f"'{spec}' has {model.config.num_labels} output labels; DialogRPT rankers have one"
        )
    _RANKERS[spec] = (model.eval(), tok)
    return _RANKERS[spec]


def context_text(messages: list[dict]) -> str:
    """The conversation so far as DialogRPT reads it: turns joined by <|endoftext|>."""
    return SEP.join(m["content"].strip() for m in messages if m["role"] != "system")


def rank(ranker: tuple[Any, Any], contexts: list[str], replies: list[str], max_len: int = 512):
    """sigmoid(logit) of each (context, reply) pair."""
    import torch

    model, tok = ranker
    out = []
    with torch.inference_mode():
        for c, r in zip(contexts, replies, strict=True):
            ids = tok(f"{c}{SEP}{r.strip()}", return_tensors="pt")["input_ids"][:, -max_len:]
            out.append(float(torch.sigmoid(model(input_ids=ids).logits[0, 0])))
    return out


def load_rows(cfg: EvalConfig) -> tuple[list[dict], str]:
    file = cfg.options.get("file")
    path = Path(file) if file else Path(cfg.data_dir) / "pref_val.jsonl"
    if not path.is_file():
        raise ZephyrError(
            f"dialogrpt prompts not found at {path}; pass the data stage's output as --data-dir or "
            "set the dialogrpt option `file` to a JSONL of preference (prompt) or SFT rows"
        )
    return gen.read_rows(path, "dialogrpt prompts"), str(path)


def conversation(row: dict) -> list[dict]:
    """The prompt turns of a preference row or of an SFT row (its last assistant turn dropped)."""
    if "prompt" in row:
        return prompt_messages(row)
    messages = sft_messages(row)
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    rows, source = load_rows(cfg)
    spec = str(cfg.options.get("model") or DEFAULT_MODEL)
    ranker = load_ranker(spec)  # before generating: a missing ranker fails in seconds
    picked = gen.subset(rows, cfg.limit, cfg.seed)
    convs = [conversation(r) for _, r in picked]
    prompts = [gen.chat_prompt(scorer.tokenizer, c) for c in convs]
    max_new = int(cfg.options.get("max_new_tokens", 128))
    replies = gen.generate(scorer, prompts, max_new, STOP)
    max_len = int(cfg.options.get("max_len", 512))
    contexts = [context_text(c) for c in convs]
    scores = rank(ranker, contexts, replies, max_len)
    per_item = {"updown": scores}
    chosen = [r.get("chosen") for _, r in picked]
    if all(isinstance(c, str) for c in chosen):
        ref = rank(ranker, contexts, chosen, max_len)
        per_item["win_vs_chosen"] = [
            0.5 if abs(s - c) <= 1e-6 else float(s > c) for s, c in zip(scores, ref, strict=True)
        ]
    gen.write_log(
        cfg,
        "dialogrpt",
        [
            {"index": i, "id": r.get("id"), "prompt": p, "output": o, "updown": s}
            for (i, r), p, o, s in zip(picked, prompts, replies, scores, strict=True)
        ],
    )
    return TaskResult(
        "dialogrpt",
        {k: gen.mean(v) for k, v in per_item.items()},
        f"0-shot chat template, greedy, max {max_new} new tokens, stop <|im_end|>; ranker {spec} "
        f"(sigmoid of its logit on context<|endoftext|>reply, last {max_len} tokens); updown = "
        "mean score of the replies; win_vs_chosen = share outscoring the dataset's chosen reply",
        len(scores),
        per_item,
        {"source": source, "ranker": spec},
    )
