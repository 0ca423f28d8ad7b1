"""The whole data build on the fixtures: outputs, manifest, decontamination, strict mode, CLI, pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from zephyr.data.build import build, parse_config
from zephyr.errors import ZephyrError
from zephyr.io import read_jsonl, sha256_file

ROOT = Path(__file__).parent / "fixtures" / "data"

DATA = {
    "val_fraction": 0.2,
    "max_chars": 4000,
    "synth": {"seed": 0, "n_per_family": 2, "test_n_per_family": 1},
    "sft": [
        {"source": "gsm8k", "split": "train"},
        {"source": "lima"},
        {"source": "code_alpaca", "cap": 1},
        {"source": "synth", "cap": 5},
    ],
    "pref": [
        {"source": "hh_rlhf", "subset": "helpful-base"},
        {"source": "pandalm"},
        {"source": "dpo_demo"},
        {"source": "file", "path": "generic/prefs.jsonl", "name": "feedback"},
    ],
    "mcqa": [
        {"source": "arc", "split": "train"},
        {"source": "mmlu", "split": "dev"},
        {"source": "sciq"},
        {
            "source": "file",
            "path": "generic/mcqa.csv",
            "name": "quiz",
            "columns": {"question": "q", "choices": ["a", "b", "c", "d"], "answer": "label"},
        },
    ],
}


def write_recipe(path: Path, data: dict, root: Path = ROOT, **top) -> Path:
    recipe = {
        "name": "t",
        "seed": 0,
        "out": str(path.parent / "runs"),
        "data_root": str(root),
        "stages": ["data"],
        "data": data,
        **top,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data")
    return out, build(parse_config(DATA), ROOT, out, seed=0)


def test_outputs_and_manifest(built):
    out, man = built
    names = {p.name for p in out.iterdir()}
    assert names == {
        f"{k}_{s}.jsonl" for k in ("sft", "pref", "mcqa") for s in ("train", "val")
    } | {
        "synth_test.jsonl",
        "manifest.json",
    }
    for name, info in man["outputs"].items():
        assert info["sha256"] == sha256_file(out / name)
        assert info["rows"] == len(read_jsonl(out / name))
    assert man["seed"] == 0 and man["provenance"]["config"]["val_fraction"] == 0.2
    assert "torch" in man["provenance"]["versions"]
    assert any(k.endswith("gsm8k/train.jsonl") for k in man["provenance"]["inputs"])
    assert json.loads((out / "manifest.json").read_text())["outputs"] == man["outputs"]


def test_every_row_is_accounted_for(built):
    out, man = built
    for kind, sources in man["sources"].items():
        total = 0
        for name, s in sources.items():
            assert s["read"] == s["kept"] + sum(s["dropped"].values()), (kind, name)
            assert s["kept"] == s["train"] + s["val"]
            total += s["kept"]
        rows = read_jsonl(out / f"{kind}_train.jsonl") + read_jsonl(out / f"{kind}_val.jsonl")
        assert len(rows) == total
        assert {r["source"] for r in rows} <= set(sources)


def test_per_source_results(built):
    _, man = built
    sft, pref, mcqa = (man["sources"][k] for k in ("sft", "pref", "mcqa"))
    assert sft["gsm8k:train"]["dropped"] == {"malformed": 2, "decontam:gsm8k_test": 1}
    assert sft["gsm8k:train"]["malformed_examples"][0]["line"] == 3
    assert sft["code_alpaca"]["dropped"] == {
        "duplicate_exact": 1,
        "duplicate_normalised": 1,
        "over_cap": 1,
    }
    assert (
        sft["synth"]["kept"] == 5
        and sft["synth"]["dropped"]["over_cap"] == sft["synth"]["read"] - 5
    )
    assert sft["lima"]["dropped"] == {"empty_field": 1, "malformed": 1}
    assert pref["hh_rlhf/helpful-base"]["dropped"] == {
        "malformed": 1,
        "unsafe": 1,
        "chosen_equals_rejected": 1,
    }
    assert pref["hh_rlhf/helpful-base"]["pii_redacted"] == {"EMAIL": 1}  # in the shared prompt
    assert pref["pandalm"]["dropped"] == {"tie": 2, "malformed": 1}
    assert pref["feedback"]["kept"] == 2 and mcqa["quiz"]["kept"] == 2
    assert mcqa["arc:train"]["dropped"] == {"malformed": 1, "decontam:arc_test": 1}
    dec = man["decontam"]["eval_sets"]
    assert dec["gsm8k_test"]["removed"] == {"sft": 1, "total": 1}
    assert dec["arc_test"]["removed"] == {"mcqa": 1, "total": 1} and dec["arc_test"]["docs"] == 2
    assert dec["hellaswag_val"]["malformed"] == 1


def test_synth_test_set_is_written_and_disjoint(built):
    out, man = built
    test = read_jsonl(out / "synth_test.jsonl")
    assert test and all("answer_text" in r for r in test)
    assert man["synth_test_overlap"] == 0


def test_rows_follow_the_schema(built):
    out, _ = built
    from zephyr.data.schema import prompt_messages, sft_messages

    for r in read_jsonl(out / "sft_train.jsonl"):
        assert sft_messages(r)[-1]["role"] == "assistant" and r["id"] and r["source"]
    for r in read_jsonl(out / "pref_train.jsonl"):
        assert prompt_messages(r)[-1]["role"] == "user" and r["chosen"] != r["rejected"]
    for r in read_jsonl(out / "mcqa_train.jsonl"):
        assert 0 <= r["answer"] < len(r["choices"]) and isinstance(r["subject"], str)


def test_same_seed_same_bytes_other_seed_other_order(built, tmp_path):
    out, man = built
    again = build(parse_config(DATA), ROOT, tmp_path / "a", seed=0)
    assert again["outputs"] == man["outputs"]
    other = build(parse_config(DATA), ROOT, tmp_path / "b", seed=1)
    assert (
        other["outputs"]["mcqa_train.jsonl"]["sha256"]
        != man["outputs"]["mcqa_train.jsonl"]["sha256"]
    )
    assert not list((tmp_path / "a").glob(".*.tmp"))  # atomic writes leave no temp files


def test_strict_fails_on_the_first_malformed_row(tmp_path):
    cfg = parse_config({**DATA, "strict": True})  # eval sets are read first: HellaSwag's bad label
    with pytest.raises(
        ZephyrError, match=r"hellaswag_val_full\.txt\.bz2:7: gold label must be 0-3"
    ):
        build(cfg, ROOT, tmp_path, seed=0)
    cfg = parse_config({**DATA, "strict": True, "decontam": {"against": []}})
    with pytest.raises(ZephyrError, match=r"gsm8k/train\.jsonl:3: invalid JSON"):
        build(cfg, ROOT, tmp_path, seed=0)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"val_fracton": 0.1}, "unknown key 'val_fracton'.*did you mean 'val_fraction'"),
        ({"sft": [{"source": "gsm8k", "cap": "many"}]}, r"sft\[0\]\.cap must be int"),
        ({"sft": [{"source": "synth"}]}, "synth is not set"),
        ({"decontam": {"against": ["gsm8k_train"]}}, "unknown eval set 'gsm8k_train'"),
        ({"sft": [{"source": "gsm8k"}, {"source": "gsm8k"}]}, "listed twice"),
        ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_recipe_sections(data, message):
    with pytest.raises(ZephyrError, match=message):
        parse_config(data)


def cli(*args):
    from zephyr.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_build_and_inspect(tmp_path):
    small = {
        "decontam": {"against": ["gsm8k_test"]},
        "sft": [{"source": "gsm8k"}],
        "mcqa": [{"source": "sciq"}],
    }
    recipe = write_recipe(tmp_path / "r.yaml", small, root=Path("/nonexistent"))
    res = cli("data", "build", recipe, "--out", tmp_path / "out", "--data-root", ROOT)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "sft_train.jsonl").exists()
    res = cli("data", "inspect", tmp_path / "out")
    assert res.exit_code == 0 and "gsm8k" in res.output and "sciq" in res.output
    res = cli(
        "data", "build", recipe, "--out", tmp_path / "strict", "--data-root", ROOT, "--strict"
    )
    assert isinstance(res.exception, ZephyrError) and "train.jsonl:3" in str(res.exception)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sft": [{"source": "gsm8k", "split": "dev"}]}, "data file not found"),
        ({"sft": [{"source": "wiki"}]}, "unknown source 'wiki'"),
        (
            {"mcqa": [{"source": "file", "path": "gsm8k/train.jsonl", "format": "xml"}]},
            "unknown format 'xml'",
        ),
        ({"sft": [{"source": "gsm8k", "capp": 3}]}, "unknown key 'capp'"),
    ],
)
def test_cli_errors_are_one_sentence(tmp_path, data, message):
    recipe = write_recipe(tmp_path / "r.yaml", data)
    res = cli("data", "build", recipe, "--out", tmp_path / "out")
    assert isinstance(res.exception, ZephyrError) and message in str(res.exception)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_corrupt_archive_is_one_clear_error(tmp_path):
    (tmp_path / "hh-rlhf" / "helpful-base").mkdir(parents=True)
    (tmp_path / "hh-rlhf" / "helpful-base" / "test.jsonl.gz").write_bytes(
        b"\x1f\x8b\x08 not really gzip"
    )
    cfg = parse_config(
        {"decontam": {"against": []}, "pref": [{"source": "hh_rlhf", "subset": "helpful-base"}]}
    )
    with pytest.raises(ZephyrError, match=r"could not read .*test\.jsonl\.gz"):
        build(cfg, tmp_path, tmp_path / "out", seed=0)


def test_cli_exit_code_and_no_traceback(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"sft": [{"source": "wiki"}]})
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zephyr.cli import main; main()",
            "data",
            "build",
            str(recipe),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown source 'wiki'" in proc.stderr and "Traceback" not in proc.stderr


def test_pipeline_stage_reuses_and_rebuilds_on_input_change(tmp_path):
    from zephyr.pipeline import run_pipeline

    root = tmp_path / "root"
    shutil.copytree(ROOT / "gsm8k", root / "gsm8k")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {"decontam": {"against": ["gsm8k_test"]}, "sft": [{"source": "gsm8k"}]},
        root=root,
    )
    first = run_pipeline(recipe)["data"]
    assert (first / "stage.json").exists() and (first / "manifest.json").exists()
    assert run_pipeline(recipe)["data"] == first  # finished: skipped, same key
    with open(root / "gsm8k" / "train.jsonl", "a") as f:
        f.write(json.dumps({"question": "One more?", "answer": "Yes.\n#### 1"}) + "\n")
    second = run_pipeline(recipe)["data"]
    assert second != first
    assert (
        json.loads((second / "manifest.json").read_text())["sources"]["sft"]["gsm8k"]["read"] == 7
    )
