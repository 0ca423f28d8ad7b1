"""Task options from the command line: `--option task.key=value` and the named `zephyr eval` flags.

Every option a task reads from `EvalConfig.options` is listed in TASK_OPTIONS (a test checks the
list against the task modules), so a misspelt key fails before any model is loaded.
"""

from __future__ import annotations

from typing import Any

import yaml

from zephyr.errors import ZephyrError

GEN = ("max_new_tokens", "calculator")
TASK_OPTIONS: dict[str, tuple[str, ...]] = {
    "hellaswag": (),
    "arc_challenge": (),
    "arc_easy": (),
    "mmlu": (),
    "gsm8k": (*GEN, "fewshot_seed"),
    "wikitext": ("split", "window", "stride", "token_perplexity"),
    "reward_accuracy": (
        "reference",
        "beta",
        "file",
        "max_prompt_len",
        "max_len",
        "reference_dtype",
    ),
    "bertscore": (*GEN, "model", "num_layers", "file", "n"),
    "synthetic": (*GEN, "file", "n"),
    "mcqa_letter": ("file", "source", "system", "debias", "pride_share"),
    "dialogrpt": ("max_new_tokens", "model", "file", "max_len"),
}


def scalar(text: str) -> Any:
    """A command-line value as YAML reads it: 0.1 -> float, 64 -> int, true -> bool, else str."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool | str) or value is None else text


def check(options: dict[str, dict], tasks: list[str], where: str = "--option") -> None:
    """Every option names a task being run and a key that task reads."""
    for task, opts in options.items():
        if task not in tasks:
            raise ZephyrError(
                f"{where} names task '{task}', which is not in --tasks ({', '.join(tasks)}); "
                "add it there or drop the option"
            )
        known = TASK_OPTIONS.get(task)
        bad = [k for k in opts if known is not None and k not in known]
        if bad:
            raise ZephyrError(
                f"{where} {task}.{bad[0]}: {task} has no option '{bad[0]}'; its options: "
                f"{', '.join(known) or 'none'}"
            )


def parse(pairs: list[str] | None, tasks: list[str]) -> dict[str, dict]:
    """['reward_accuracy.beta=0.2', ...] -> {'reward_accuracy': {'beta': 0.2}}, checked."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        task, dot, name = key.strip().partition(".")
        if not sep or not dot or not task or not name:
            raise ZephyrError(
                f"--option '{pair}' is not of the form task.key=value, e.g. "
                "reward_accuracy.reference=runs/demo/sft-1a2b/model"
            )
        out.setdefault(task, {})[name] = scalar(value)
    check(out, tasks)
    return out


def named(tasks: list[str], flags: dict[str, tuple[tuple[str, ...], str, Any]]) -> dict[str, dict]:
    """Named flags -> options: flag -> (its tasks, option key, value or None when not given).

    A flag given for tasks none of which is in --tasks is an error (it would do nothing)."""
    out: dict[str, dict] = {}
    for flag, (owners, key, value) in flags.items():
        if value is None:
            continue
        hit = [t for t in owners if t in tasks]
        if not hit:
            raise ZephyrError(
                f"{flag} is an option of {' / '.join(owners)}, none of which is in --tasks; "
                f"add one (e.g. --tasks {owners[0]}) or drop {flag}"
            )
        for t in hit:
            out.setdefault(t, {})[key] = value
    return out


def merge(*parts: dict[str, dict]) -> dict[str, dict]:
    """Later parts win key by key (named flags, then --option)."""
    out: dict[str, dict] = {}
    for part in parts:
        for task, opts in part.items():
            out.setdefault(task, {}).update(opts)
    return out
