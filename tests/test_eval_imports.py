"""The eval package's structure: no import cycle runs through it, the report does not reach into
zephyr.quantize (compare imports the report's Table 2 cells instead), and Table 1 and Table 2
define a model's disk MB and generation speed alike (zephyr.eval.measure)."""

from __future__ import annotations

import ast
from pathlib import Path

import zephyr

SRC = Path(zephyr.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the zephyr modules it imports anywhere (function bodies too), typing-only
    imports (`if TYPE_CHECKING:`) left out."""
    mods = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in names:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "zephyr"):
                    found.add(target)
        graph[name] = found
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


def test_no_import_cycle_runs_through_the_eval_package_or_compare():
    graph = _graph()
    ours = [m for m in graph if m.startswith("zephyr.eval") or m == "zephyr.quantize.compare"]
    assert "zephyr.eval.report_table" in ours
    cycles = [m for m in ours if m in _reach(graph, m)]
    assert cycles == []


def test_the_report_modules_do_not_reach_into_quantize():
    graph = _graph()
    for m in [m for m in graph if m.startswith("zephyr.eval.report")]:
        assert not [t for t in _reach(graph, m) if t.startswith("zephyr.quantize")], m


def test_table_1_and_table_2_measure_disk_and_speed_alike(tmp_path: Path):
    from zephyr.eval import measure, stage
    from zephyr.quantize import compare

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "tokenizer.json").write_bytes(b"\0" * 500_000)  # not a weight file

    class Model:
        def parameters(self) -> list:
            return []

    table1 = stage.model_size(Model(), str(tmp_path))["disk_mb"]
    assert compare.disk_mb(str(tmp_path)) == table1 == 3.0  # MB = 10^6 bytes in both tables
    assert compare.gen_speed is stage.gen_speed is measure.gen_speed
