"""The library's floors: each part of etl/ imports only the parts below it, and no module imports
itself back through others. The order is docs/development.md's Layout section."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ETL = Path(__file__).resolve().parents[2] / "etl"

#: Lowest first: a part may import the parts before it in this list, never those after it.
FLOORS = ["core", "config", "dialects", "rules", "sync", "reporting", "warehouse", "events", "airflow", "cli"]


def _modules() -> dict[str, set[str]]:
    """Each module of etl/ and the etl modules it imports, lazily or not."""
    imports: dict[str, set[str]] = {}
    for path in ETL.rglob("*.py"):
        name = ".".join(path.relative_to(ETL.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("etl"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("etl")}
        imports[name] = found
    return {m: {i for i in found if i in imports and i != m} for m, found in imports.items()}


def _floor(module: str) -> int:
    """Its place in FLOORS; ``python -m etl`` (etl/__main__.py) stands on top of them all."""
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else len(FLOORS)


def test_every_part_of_the_library_is_on_a_floor() -> None:
    parts = {p.name for p in ETL.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert parts == set(FLOORS)
    assert {p.name for p in ETL.glob("*.py")} == {"__init__.py", "__main__.py"}


def test_imports_point_down() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in _modules().items()
        for target in targets
        if _floor(module) < _floor(target)
    ]
    assert upward == []


def test_no_module_imports_itself_back() -> None:
    graph = _modules()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_says_what_it_holds(floor: str) -> None:
    assert ast.get_docstring(ast.parse((ETL / floor / "__init__.py").read_text(encoding="utf-8")))
