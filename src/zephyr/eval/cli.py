"""CLI commands of the eval stage: `zephyr eval` and `zephyr report` (zephyr.eval.report_cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zephyr.errors import ZephyrError, exit_on_error
from zephyr.eval.report_cli import register as register_report
from zephyr.recipe import DEFAULT_DATA_ROOT


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.2f}"


def print_results(results: dict) -> None:
    """A rich table: task, metric, value, n and the protocol next to every number."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"zephyr eval: {results['model']}", show_lines=True)
    for col in ("task", "metric", "value", "n", "protocol"):
        table.add_column(col, overflow="fold", max_width=70 if col == "protocol" else None)
    for name, res in results["tasks"].items():
        for i, (metric, value) in enumerate(res["metrics"].items()):
            table.add_row(
                name if i == 0 else "",
                metric,
                _fmt(value),
                str(res["n"]),
                res["protocol"] if i == 0 else "",
            )
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""

    @app.command("eval")
    def eval_cmd(
        model: Annotated[
            str,
            typer.Argument(help="Model spec: smollm2-135m, a model/adapter/quantized dir, a .gguf"),
        ],
        tasks: Annotated[
            str, typer.Option(help="Comma-separated tasks, e.g. hellaswag,arc_challenge,mmlu")
        ] = "hellaswag",
        data_dir: Annotated[Path, typer.Option(help="Folder laid out like ../shared/data")] = Path(
            DEFAULT_DATA_ROOT
        ),
        limit: Annotated[
            int | None, typer.Option(help="Seeded sample of N items per task (default: all)")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the item sample and few-shot draws")] = 0,
        batch_size: Annotated[int, typer.Option(help="Rows per forward pass")] = 8,
        num_fewshot: Annotated[
            int | None, typer.Option(help="Shots (default: each task's lm-eval default)")
        ] = None,
        json: Annotated[
            Path | None, typer.Option("--json", help="Write machine-readable results here")
        ] = None,
        log_dir: Annotated[Path | None, typer.Option(help="Write per-item JSONL logs here")] = None,
        dtype: Annotated[
            str,
            typer.Option(
                help="float32, bfloat16, float16 or auto (bf16 where the hardware is fast)"
            ),
        ] = "float32",
        option: Annotated[
            list[str] | None,
            typer.Option(
                "--option",
                help="Any task option as task.key=value (repeatable), e.g. "
                "reward_accuracy.max_len=256, wikitext.window=512, mcqa_letter.file=x.jsonl",
            ),
        ] = None,
        reference: Annotated[
            str | None,
            typer.Option(help="reward_accuracy: the reference model (the DPO start model)"),
        ] = None,
        pairs: Annotated[
            Path | None,
            typer.Option(help="reward_accuracy / dialogrpt: preference pairs JSONL (held out)"),
        ] = None,
        beta: Annotated[
            float | None, typer.Option(help="reward_accuracy: DPO beta of the implicit reward")
        ] = None,
        max_new_tokens: Annotated[
            int | None,
            typer.Option(help="gsm8k / synthetic / bertscore / dialogrpt: generation length"),
        ] = None,
        dialogrpt_model: Annotated[
            str | None,
            typer.Option(help="dialogrpt: the ranker (a local copy of microsoft/DialogRPT-updown)"),
        ] = None,
        calculator: Annotated[
            bool | None,
            typer.Option(
                help="Generation tasks complete <<expr= with the exact result (default: on when "
                "the model was trained with the annotations)"
            ),
        ] = None,
        device: Annotated[str, typer.Option(help="auto|cpu|cuda|mps")] = "auto",
        engine: Annotated[
            str, typer.Option(help="Generation tasks on hf or llamacpp (the model's f16 GGUF)")
        ] = "hf",
    ) -> None:
        """Evaluate MODEL with lm-eval-exact protocols; prints every metric with its protocol."""
        from rich.console import Console

        from zephyr.eval import options as task_options
        from zephyr.eval.run import evaluate, parse_tasks
        from zephyr.io import write_json

        with exit_on_error():
            names = parse_tasks(tasks)
            gen_tasks = ("gsm8k", "synthetic", "bertscore", "dialogrpt")
            flags = {
                "--reference": (("reward_accuracy",), "reference", reference),
                "--pairs": (("reward_accuracy", "dialogrpt"), "file", pairs and str(pairs)),
                "--beta": (("reward_accuracy",), "beta", beta),
                "--max-new-tokens": (gen_tasks, "max_new_tokens", max_new_tokens),
                "--dialogrpt-model": (("dialogrpt",), "model", dialogrpt_model),
                "--calculator": (("gsm8k", "synthetic", "bertscore"), "calculator", calculator),
            }
            options = task_options.merge(
                task_options.named(names, flags), task_options.parse(option, names)
            )
            if batch_size < 1:
                raise ZephyrError(f"--batch-size must be at least 1, got {batch_size}")
            if not data_dir.is_dir():
                raise ZephyrError(
                    f"--data-dir {data_dir} does not exist; point it at a folder laid out like ../shared/data"
                )
            results = evaluate(
                model,
                names,
                data_dir=data_dir,
                limit=limit,
                seed=seed,
                batch_size=batch_size,
                num_fewshot=num_fewshot,
                log_dir=log_dir,
                dtype=dtype,
                options=options,
                device=device,
                engine=engine,
            )
        print_results(results)
        if json is not None:
            write_json(json, results)
            Console(stderr=True).print(f"results written to {json}")

    register_report(app)
