"""lm-evaluation-harness as the reference: run its HF backend on the same items Zephyr scores.

Used by tests/test_parity_lm_eval.py and bench/bench_eval.py; needs the dev extra (`lm-eval`).
lm-eval reads the local items through task YAMLs written to a temporary folder: `dataset_path:
json` with `data_files`, and its own templates (`include:` of the installed arc / mmlu YAMLs), so
the prompts are lm-eval's, not ours. HellaSwag goes through lm-eval's own `process_docs` (its
preprocessing and `ctx_b.capitalize()`): we hand it `activity_label`, `ctx_a`, `ctx_b`, `endings`
rebuilt from the text file (ctx_b = the lowercase last sentence, the part lm-eval capitalizes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

LM_EVAL_MISSING = (
    "lm-eval is not installed; run `pip install -e '.[dev]'` (it pins lm-eval==0.4.13)"
)


def _lm_eval_dir() -> Path:
    try:
        import lm_eval
    except ImportError:
        raise ZephyrError(LM_EVAL_MISSING) from None
    return Path(lm_eval.__file__).parent


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def hellaswag_raw(context: str, endings: list[str], gold: int) -> dict:
    """The raw HF fields lm-eval's hellaswag `process_docs` expects, rebuilt from our text line."""
    label, _, ctx = context.partition(": ")
    head, sep, last = ctx.rpartition(". ")
    if sep and last[:1].islower():
        ctx_a, ctx_b = head + ".", last
    else:
        ctx_a, ctx_b = ctx, ""
    return {
        "activity_label": label,
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "endings": endings,
        "label": str(gold),
    }


def _mmlu_rows(subject: str, rows: list[list[str]]) -> list[dict]:
    """CSV rows -> the fields of the HF `cais/mmlu` dataset lm-eval's template reads."""
    return [
        {"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5])}
        for r in rows
    ]


def write_tasks(folder: Path, hellaswag=None, arc=None, mmlu=None) -> list[str]:
    """Task YAMLs + JSONL for lm-eval; returns the task names to run.

    hellaswag: list of (raw context line, endings, gold) as in the text file
    arc: list of ARC JSONL rows (our schema); mmlu: {subject: (test rows, dev rows)} CSV rows
    """
    lm = _lm_eval_dir() / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    if hellaswag:
        import datasets
        from lm_eval.tasks.hellaswag.utils import process_docs

        raw = datasets.Dataset.from_list([hellaswag_raw(c, e, g) for c, e, g in hellaswag])
        docs = [
            {"query": d["query"], "choices": d["choices"], "gold": d["gold"]}
            for d in process_docs(raw)
        ]
        data = _write(folder / "hellaswag.jsonl", docs)
        (folder / "zhellaswag.yaml").write_text(
            "task: zhellaswag\ndataset_path: json\ndataset_kwargs:\n"
            f"  data_files:\n    validation: {data}\n"
            "output_type: multiple_choice\nvalidation_split: validation\n"
            'doc_to_text: "{{query}}"\ndoc_to_target: "{{gold}}"\ndoc_to_choice: "choices"\n'
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )
        names.append("zhellaswag")
    if arc:
        rows = [
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": {
                    "text": [c["text"] for c in r["question"]["choices"]],
                    "label": [c["label"] for c in r["question"]["choices"]],
                },
                "answerKey": r["answerKey"],
            }
            for r in arc
        ]
        data = _write(folder / "arc.jsonl", rows)
        (folder / "zarc.yaml").write_text(
            f"include: {lm / 'arc' / 'arc_easy.yaml'}\ntask: zarc\ntag: []\ndataset_path: json\n"
            f"dataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            "training_split: null\nvalidation_split: null\ntest_split: test\n"
        )
        names.append("zarc")
    for subject, (test, dev) in (mmlu or {}).items():
        t = _write(folder / f"mmlu_{subject}_test.jsonl", _mmlu_rows(subject, test))
        d = _write(folder / f"mmlu_{subject}_dev.jsonl", _mmlu_rows(subject, dev))
        words = subject.replace("_", " ")
        description = json.dumps(
            f"The following are multiple choice questions (with answers) about {words}." + "\n\n"
        )
        (folder / f"zmmlu_{subject}.yaml").write_text(
            f"include: {lm / 'mmlu' / 'default' / '_default_template_yaml'}\n"
            f"task: zmmlu_{subject}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    test: {t}\n    dev: {d}\n"
            f"description: {description}\nnum_fewshot: 5\n"
        )
        names.append(f"zmmlu_{subject}")
    return names


def run_lm_eval(
    model: Any, tokenizer: Any, folder: Path, names: list[str], batch_size: int = 8
) -> dict:
    """Run lm-eval's HFLM on the written tasks -> samples {task: [by doc_id]}, seconds of scoring.

    The clock covers only HFLM.loglikelihood (the model work), not lm-eval's task building.
    """
    _lm_eval_dir()
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    spent = [0.0, 0.0]  # wall, process CPU
    inner = lm.loglikelihood

    def timed(requests, *a, **k):
        t0, c0 = time.perf_counter(), time.process_time()
        out = inner(requests, *a, **k)
        spent[0] += time.perf_counter() - t0
        spent[1] += time.process_time() - c0
        return out

    lm.loglikelihood = timed
    out = evaluator.simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    samples = {k: sorted(v, key=lambda s: s["doc_id"]) for k, v in out["samples"].items()}
    return {"samples": samples, "seconds": spent[0], "cpu_seconds": spent[1]}


def loglikelihoods(sample: dict) -> list[float]:
    """Per-choice log-likelihoods of one lm-eval sample."""
    return [float(r[0][0]) for r in sample["resps"]]


def contexts(sample: dict) -> list[str]:
    return [a[0] for a in sample["arguments"]]
