"""MMLU (test split), lm-eval's default `mmlu` group: acc, 5-shot from the dev split.

Per subject lm-eval renders (`tasks/mmlu/default/_default_template_yaml`, `first_n` sampler):
    The following are multiple choice questions (with answers) about {subject words}.\\n\\n
    {dev question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n      (x5, dev order)
    {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:
and scores the continuations " A", " B", " C", " D" (one token each). The aggregate (and the
four category groups) weight subjects by their size, i.e. the mean over items.
"""

from __future__ import annotations

import csv
from collections import defaultdict

from zephyr.errors import ZephyrError
from zephyr.eval import multiple_choice as mc
from zephyr.eval.task import EvalConfig, TaskResult

LETTERS = ["A", "B", "C", "D"]

# lm-eval's mmlu category of each subject (the `tag` of tasks/mmlu/default/mmlu_<subject>.yaml)
CATEGORIES = {
    "stem": "abstract_algebra anatomy astronomy college_biology college_chemistry "
    "college_computer_science college_mathematics college_physics computer_security "
    "conceptual_physics electrical_engineering elementary_mathematics high_school_biology "
    "high_school_chemistry high_school_computer_science high_school_mathematics "
    "high_school_physics high_school_statistics machine_learning",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging "
    "management marketing medical_genetics miscellaneous nutrition professional_accounting "
    "professional_medicine virology",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology "
    "human_sexuality professional_psychology public_relations security_studies sociology "
    "us_foreign_policy",
    "humanities": "formal_logic high_school_european_history high_school_us_history "
    "high_school_world_history international_law jurisprudence logical_fallacies "
    "moral_disputes moral_scenarios philosophy prehistory professional_law world_religions",
}
CATEGORY = {s: cat for cat, subjects in CATEGORIES.items() for s in subjects.split()}


def read_split(cfg: EvalConfig, split: str) -> dict[str, list[list[str]]]:
    """subject -> rows `[question, A, B, C, D, answer letter]` of `mmlu/<split>/<subject>_<split>.csv`."""
    folder = mc.data_file(cfg, "mmlu", split)
    out = {}
    for path in sorted(folder.glob(f"*_{split}.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        for i, r in enumerate(rows, 1):
            if len(r) != 6 or r[5] not in LETTERS:
                raise ZephyrError(f"{path}: record {i} is not `question,A,B,C,D,letter`")
        out[path.name[: -len(f"_{split}.csv")]] = rows
    if not out:
        raise ZephyrError(
            f"{folder} has no *_{split}.csv files; is --data-dir laid out like ../shared/data?"
        )
    return out


def render(row: list[str]) -> str:
    """lm-eval `doc_to_text`: `{{question.strip()}}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:`."""
    q, *choices = row[:5]
    return (
        q.strip()
        + "".join(f"\n{k}. {c}" for k, c in zip(LETTERS, choices, strict=True))
        + "\nAnswer:"
    )


def prefix(subject: str, dev: list[list[str]], k: int) -> str:
    """Description + the first k dev examples, each `text + " " + letter + "\\n\\n"`."""
    head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return head + "".join(f"{render(r)} {r[5]}\n\n" for r in dev[:k])


def load(cfg: EvalConfig, k: int) -> list[mc.MCItem]:
    test, dev = read_split(cfg, "test"), read_split(cfg, "dev")
    items = []
    for subject, rows in test.items():
        shots = prefix(subject, dev.get(subject, []), k)
        if k > len(dev.get(subject, [])):
            raise ZephyrError(
                f"mmlu {subject}: {k}-shot needs {k} dev examples, found {len(dev.get(subject, []))}"
            )
        for i, r in enumerate(rows):
            items.append(
                mc.MCItem(
                    id=f"{subject}-{i}",
                    context=shots + render(r),
                    choices=list(LETTERS),
                    gold=LETTERS.index(r[5]),
                    meta={"subject": subject},
                )
            )
    return items


def run(scorer, cfg: EvalConfig) -> TaskResult:
    k = 5 if cfg.num_fewshot is None else cfg.num_fewshot
    items = mc.sample(load(cfg, k), cfg.limit, cfg.seed)
    lls = mc.score(scorer, items)
    protocol = (
        f"{k}-shot (first {k} dev), lm-eval mmlu default template, choices ' A'..' D', test split; "
        "acc = argmax loglik, aggregate weighted by subject size"
    )
    res = mc.result("mmlu", items, lls, protocol, cfg, norm=False)
    by_subject, by_category = defaultdict(list), defaultdict(list)
    for it, a in zip(items, res.per_item["acc"], strict=True):
        by_subject[it.meta["subject"]].append(a)
        by_category[CATEGORY.get(it.meta["subject"], "other")].append(a)
    for cat, accs in sorted(by_category.items()):
        res.metrics[f"acc_{cat}"] = sum(accs) / len(accs)
    res.extra["subjects"] = {
        s: {"acc": sum(v) / len(v), "n": len(v)} for s, v in sorted(by_subject.items())
    }
    return res
