"""GSM8K as lm-eval's `gsm8k` task (lm_eval/tasks/gsm8k/gsm8k.yaml, version 3.0), plus BLEU/ROUGE.

Prompt: 5 few-shot examples `Question: {q}\\nAnswer: {full solution}` joined by a blank line, then
`Question: {q}\\nAnswer:`; greedy, at most 256 new tokens (lm-eval's max_gen_toks), cut at
"Question:", "</s>", "<|im_end|>". Few-shot examples are drawn as lm-eval's default sampler draws
them: one `random.Random(1234)` (lm-eval's fewshot seed) shared by the whole run, `rnd.sample(train,
5)` per test document in file order. We replay that sequence, so test document i gets the same
examples it gets in a full lm-eval run, whatever subset `--limit` picks.

Metrics: exact match after lm-eval's strict-match and flexible-extract filters and its
`regexes_to_ignore` / `ignore_case` normalisation; BLEU-4 (sacrebleu corpus_bleu, 13a tokenisation,
exp smoothing, 0-100) and ROUGE-1/2/L F1 (rouge_score, Porter stemming, default tokeniser, mean over
items, 0-100) of the generated solution against the reference solution (with its `<<...>>`
calculator annotations and `#### n` line, exactly the few-shot target format).
"""

from __future__ import annotations

import random
import re
from typing import Any

from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen

STOP = ["Question:", "</s>", "<|im_end|>"]
FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]  # regexes_to_ignore, applied in this order
FALLBACK = "[invalid]"


def doc_to_text(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def fewshot_sets(
    train: list[dict], upto: int, k: int, seed: int = FEWSHOT_SEED
) -> list[list[dict]]:
    """The few-shot examples of test documents 0..upto, as lm-eval's ContextSampler draws them."""
    rnd = random.Random(seed)
    return [rnd.sample(train, k) for _ in range(upto + 1)]


def build_prompt(doc: dict, shots: list[dict]) -> str:
    # target_delimiter " " after "Answer:", fewshot_delimiter "\n\n" after each example
    ctx = "".join(f"{doc_to_text(s)} {s['answer']}\n\n" for s in shots)
    return ctx + doc_to_text(doc)


def extract(text: str, pattern: re.Pattern, group_select: int) -> str:
    """lm-eval's RegexFilter: findall, pick a match, first non-empty group, strip."""
    found = pattern.findall(text)
    if not found:
        return FALLBACK
    match = found[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), FALLBACK)
    return match.strip()


def strict(text: str) -> str:
    return extract(text, STRICT, 0)


def flexible(text: str) -> str:
    return extract(text, FLEXIBLE, -1)


def normalize(s: str) -> str:
    for pattern in IGNORE:
        s = re.sub(pattern, "", s)
    return s.lower()


def exact_match(pred: str, gold_solution: str) -> float:
    return float(normalize(pred) == normalize(gold_solution))


def bleu_stats(hyp: str, ref: str) -> list[int]:
    """Sentence n-gram statistics; summed over items they give corpus BLEU (and its bootstrap)."""
    from sacrebleu.metrics import BLEU

    s = BLEU(effective_order=True).sentence_score(hyp, [ref])  # counts only: order unused
    return [s.sys_len, s.ref_len, *s.counts, *s.totals]


def corpus_bleu(stats: list[list[int]]) -> float:
    """Corpus BLEU-4 from summed sentence statistics (== sacrebleu.corpus_bleu, exp smoothing)."""
    from sacrebleu.metrics import BLEU

    tot = [sum(col) for col in zip(*stats, strict=True)]
    return float(BLEU.compute_bleu(tot[2:6], tot[6:10], tot[0], tot[1], smooth_method="exp").score)


def rouge(hyps: list[str], refs: list[str]) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for h, r in zip(hyps, refs, strict=True):
        scores = scorer.score(r, h)  # score(target, prediction)
        for name in out:
            out[name].append(100.0 * scores[name].fmeasure)
    return out


def score(
    outputs: list[str], docs: list[dict]
) -> tuple[dict[str, float], dict[str, list[float]], list]:
    """Metrics, per-item scores and per-item BLEU statistics of generated solutions."""
    golds = [d["answer"] for d in docs]
    per_item: dict[str, list[float]] = {
        "em_strict": [exact_match(strict(o), g) for o, g in zip(outputs, golds, strict=True)],
        "em_flexible": [exact_match(flexible(o), g) for o, g in zip(outputs, golds, strict=True)],
    }
    hyps = [o.strip() for o in outputs]
    stats = [bleu_stats(h, g) for h, g in zip(hyps, golds, strict=True)]
    per_item.update(rouge(hyps, golds))
    metrics = {k: gen.mean(v) for k, v in per_item.items()}
    metrics["bleu4"] = corpus_bleu(stats)
    order = ["em_strict", "em_flexible", "bleu4", "rouge1", "rouge2", "rougeL"]
    return {k: metrics[k] for k in order}, per_item, stats


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    opts = cfg.options
    k = cfg.num_fewshot if cfg.num_fewshot is not None else 5
    max_new = int(opts.get("max_new_tokens", 256))
    test = gen.read_rows(cfg.data_dir / "gsm8k" / "test.jsonl", "GSM8K test set")
    train = gen.read_rows(cfg.data_dir / "gsm8k" / "train.jsonl", "GSM8K train set (few-shot pool)")
    picked = gen.subset(test, cfg.limit, cfg.seed)
    shots = fewshot_sets(
        train, max(i for i, _ in picked), k, int(opts.get("fewshot_seed", FEWSHOT_SEED))
    )
    docs = [d for _, d in picked]
    prompts = [build_prompt(d, shots[i]) for i, d in picked]
    outputs = gen.generate(scorer, prompts, max_new, STOP, gen.use_calculator(scorer, cfg))
    metrics, per_item, stats = score(outputs, docs)
    gen.write_log(
        cfg,
        "gsm8k",
        [
            {
                "index": i,
                "prompt": p,
                "output": o,
                "strict": strict(o),
                "flexible": flexible(o),
                "gold": d["answer"],
                **{m: per_item[m][j] for m in per_item},
            }
            for j, ((i, d), p, o) in enumerate(zip(picked, prompts, outputs, strict=True))
        ],
    )
    protocol = (
        f"{k}-shot lm-eval gsm8k v3 (Question:/Answer:, fewshot seed {FEWSHOT_SEED}), greedy, "
        f"max {max_new} new tokens, stop Question:|</s>|<|im_end|>; em_strict = '#### n' regex, "
        "em_flexible = last number, lm-eval normalisation; bleu4 = sacrebleu corpus BLEU (13a, exp "
        "smoothing, 0-100); rouge1/2/L = rouge_score F1 x100 (Porter stemmer), vs reference solution"
    )
    return TaskResult("gsm8k", metrics, protocol, len(docs), per_item, {"bleu_stats": stats})
