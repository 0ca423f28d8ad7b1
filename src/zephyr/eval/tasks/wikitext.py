"""WikiText-2 perplexity: lm-eval's `wikitext` metrics by rolling log-likelihood, plus token perplexity.

lm-eval evaluates `EleutherAI/wikitext_document_level` (wikitext-2-raw-v1, test split): one item
per article, the text detokenized by `wikitext_detokenizer`, scored with `loglikelihood_rolling`
(disjoint windows of the model's full context length), and
    word_perplexity = exp(-sum loglik / sum words),  words = len(re.split(r"\\s+", page))
    byte_perplexity = exp(-sum loglik / sum bytes),  bytes = len(page.encode())
    bits_per_byte   = -sum loglik / sum bytes / ln 2
with words and bytes counted on the page *before* detokenization.

Our copy is the *tokenized* wikitext-2 v1 (`<unk>` for rare words; the raw variant is not
available), so numbers are close to but not the same as lm-eval's on wikitext-2-raw-v1. Documents
are rebuilt as the document-level dataset builds them: a new article starts at every top-level
heading line ` = Title = `, and its lines are joined with "\\n" (62 articles in test).

token_perplexity: exp(mean token NLL) over the articles joined by "\\n\\n", sliding window
(options `window`, default 1024, and `stride`, default 512; the transformers perplexity recipe).
"""

from __future__ import annotations

import math
import re

from zephyr.errors import ZephyrError
from zephyr.eval import multiple_choice as mc
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.io import write_jsonl

SPLITS = {"test": "test.txt", "validation": "valid.txt", "valid": "valid.txt"}


def documents(text: str) -> list[str]:
    """Articles of a wikitext-2 file: split at top-level headings, lines joined with "\\n"."""
    docs, lines = [], []
    for line in text.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                docs.append(page)
            lines = []
        lines.append(line)
    page = "\n".join(lines)
    if page.strip():
        docs.append(page)
    return docs


def detokenize(string: str) -> str:
    """lm-eval `tasks/wikitext/preprocess_wikitext.py:wikitext_detokenizer`, verbatim."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def run(scorer, cfg: EvalConfig) -> TaskResult:
    if cfg.num_fewshot:
        raise ZephyrError(
            "wikitext is a perplexity task and takes no few-shot examples; drop --num-fewshot"
        )
    opts = cfg.options
    split = opts.get("split", "test")
    if split not in SPLITS:
        raise ZephyrError(f"wikitext split '{split}' is unknown; choose test or validation")
    path = mc.data_file(cfg, "wikitext-2", SPLITS[split])
    pages = mc.sample(documents(path.read_text(encoding="utf-8")), cfg.limit, cfg.seed)
    texts = [detokenize(p) for p in pages]
    lls = scorer.loglikelihood_rolling(texts)
    words = [len(re.split(r"\s+", p)) for p in pages]
    nbytes = [len(p.encode("utf-8")) for p in pages]
    total = sum(lls)
    metrics = {
        "word_perplexity": math.exp(-total / sum(words)),
        "byte_perplexity": math.exp(-total / sum(nbytes)),
        "bits_per_byte": -total / sum(nbytes) / math.log(2),
    }
    window, stride = int(opts.get("window", 1024)), int(opts.get("stride", 512))
    extra = {"split": split, "rolling_window": scorer.max_length}
    if opts.get("token_perplexity", True):
        tp = scorer.token_perplexity("\n\n".join(texts), window=window, stride=stride)
        metrics["token_perplexity"] = tp["token_perplexity"]
        extra.update(tokens=tp["tokens"], window=window, stride=stride)
    if cfg.log_dir is not None:
        write_jsonl(
            cfg.log_dir / "wikitext.jsonl",
            [
                {
                    "id": f"wikitext-{split}-{i}",
                    "title": p.strip().split("\n")[0].strip(" ="),
                    "loglikelihood": ll,
                    "words": w,
                    "bytes": b,
                }
                for i, (p, ll, w, b) in enumerate(zip(pages, lls, words, nbytes, strict=True))
            ],
        )
    protocol = (
        f"lm-eval wikitext metrics on tokenized wikitext-2 v1 {split} (articles split at ` = Title = `,"
        f" detokenized), rolling loglik, window {scorer.max_length}; words/bytes of the raw page; "
        f"token_perplexity: sliding window {window}, stride {stride}"
    )
    # per-article sums, for ratio-of-sums bootstraps (not 0/1 scores)
    per_item = {
        "loglikelihood": lls,
        "words": [float(w) for w in words],
        "bytes": [float(b) for b in nbytes],
    }
    return TaskResult("wikitext", metrics, protocol, len(pages), per_item=per_item, extra=extra)
