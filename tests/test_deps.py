"""Dependencies where they belong: what src imports is in the runtime set, test-only tools in dev,
and torchao (whose prototype/private API src uses) has an upper bound."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _names(specs: list[str]) -> dict[str, str]:
    return {re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0].lower(): s for s in specs}


def _src_imports(module: str) -> list[Path]:
    pat = re.compile(rf"^\s*(from|import) {module}(\.|\s|$)", re.M)
    return [p for p in (REPO / "src").rglob("*.py") if pat.search(p.read_text())]


def test_runtime_and_dev_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    dev = _names(project["optional-dependencies"]["dev"])
    assert not _src_imports("trl") and "trl" not in runtime and "trl" in dev
    assert _src_imports("bert_score") and "bert-score" in runtime
    private = [
        p
        for p in _src_imports("torchao")
        if re.search(r"torchao\.prototype|import _", p.read_text())
    ]
    assert private and "<" in runtime["torchao"], runtime["torchao"]
