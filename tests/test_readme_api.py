"""README's "From Python" block runs as written, with a tiny model and the fixtures swapped into
its first settings line (train SFT and DPO, evaluate on ../shared/data, chat)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_runs(tiny_model, shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    code = readme_block()
    settings = re.compile(r"^MODEL, DATA, EVAL_DATA, RUNS = .*$", re.M)
    assert settings.search(code), "the README block's settings line changed; update this test"
    values = (
        str(tiny_model),
        str(FIXTURES / "train"),
        str(shared_data),
        str(tmp_path / "nb"),
    )
    code = settings.sub(f"MODEL, DATA, EVAL_DATA, RUNS = {values!r}", code)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "hellaswag {" in out and "gsm8k {" in out
    for stage in ("sft", "dpo"):
        assert (tmp_path / "nb" / stage / "model" / "README.md").is_file()
