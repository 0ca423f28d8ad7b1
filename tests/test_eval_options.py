"""`zephyr eval` reaches every task option: --option task.key=value and the named flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zephyr.errors import ZephyrError
from zephyr.eval import options
from zephyr.eval.task import TASKS

SRC = Path(__file__).resolve().parents[1] / "src/zephyr/eval/tasks"


def test_task_options_list_every_key_the_task_modules_read():
    """A new option in a task module must be listed in TASK_OPTIONS (or the CLI rejects it)."""
    pattern = re.compile(r"""(?:options|opts)(?:\.get\(|\[)\s*["'](\w+)["']""")
    for task, module in TASKS.items():
        modules = [module, "synthetic"] if task == "bertscore" else [module]  # its items
        if any("gen.use_calculator" in (SRC / f"{m}.py").read_text() for m in modules):
            modules.append("gen")  # the shared generation helper reads `calculator`
        read = {k for m in modules for k in pattern.findall((SRC / f"{m}.py").read_text())}
        assert read == set(options.TASK_OPTIONS[task]), task


def test_option_parsing_and_its_errors():
    got = options.parse(
        [
            "reward_accuracy.beta=0.2",
            "reward_accuracy.max_len=64",
            "mcqa_letter.system=Be brief: A",
        ],
        ["reward_accuracy", "mcqa_letter"],
    )
    assert got == {
        "reward_accuracy": {"beta": 0.2, "max_len": 64},
        "mcqa_letter": {"system": "Be brief: A"},
    }
    with pytest.raises(ZephyrError, match="task.key=value"):
        options.parse(["beta=0.2"], ["reward_accuracy"])
    with pytest.raises(ZephyrError, match="has no option 'betta'; its options: reference, beta"):
        options.parse(["reward_accuracy.betta=0.2"], ["reward_accuracy"])
    with pytest.raises(ZephyrError, match="not in --tasks"):
        options.parse(["gsm8k.max_new_tokens=8"], ["hellaswag"])
    flags = {"--max-new-tokens": (("gsm8k", "synthetic"), "max_new_tokens", 16)}
    assert options.named(["synthetic", "mmlu"], flags) == {"synthetic": {"max_new_tokens": 16}}
    with pytest.raises(ZephyrError, match="--max-new-tokens is an option of gsm8k / synthetic"):
        options.named(["mmlu"], flags)


def app() -> typer.Typer:
    from zephyr.eval import cli

    a = typer.Typer()
    cli.register(a)
    return a


def test_zephyr_eval_passes_reward_accuracy_options_from_the_command_line(tiny_model, tmp_path):
    pairs = tmp_path / "held_out.jsonl"
    rows = [
        {"id": f"p{i}", "prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": f"{i + 1}?"}
        for i in range(3)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    args = ["eval", str(tiny_model), "--tasks", "reward_accuracy", "--data-dir", str(tmp_path)]
    res = CliRunner().invoke(
        app(),
        [
            *args,
            "--pairs",
            str(pairs),
            "--reference",
            str(tiny_model),
            "--beta",
            "0.25",
            "--option",
            "reward_accuracy.max_len=48",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    ra = data["tasks"]["reward_accuracy"]
    assert ra["n"] == 3 and "beta=0.25" in ra["protocol"] and "max 48 tok total" in ra["protocol"]
    assert f"pi_ref = {tiny_model}" in ra["protocol"]
    assert data["provenance"]["config"]["options"]["reward_accuracy"] == {
        "reference": str(tiny_model),
        "file": str(pairs),
        "beta": 0.25,
        "max_len": 48,
    }
    # a flag for a task that is not run, and a misspelt key: exit 2, one sentence, no model load
    bad = CliRunner().invoke(app(), [*args[:3], "hellaswag", *args[4:], "--reference", "x"])
    assert bad.exit_code == 2 and "--reference is an option of reward_accuracy" in bad.output
    bad = CliRunner().invoke(app(), [*args, "--option", "reward_accuracy.refrence=x"])
    assert bad.exit_code == 2 and "has no option 'refrence'" in " ".join(bad.output.split())
