"""The package's layers: no import circle, and no import from a lower floor up to a higher one.

``LAYERS`` is the one statement of the layer order, from the ground up. Every
module of ``brcd`` belongs to the floor of the longest name listed there that
is the module or a package holding it (``brcd.data.split_cli`` is the split
stage, the rest of ``brcd.data`` a component). A module may import

- any module of a lower floor, and
- a module of its own floor only inside the same listed unit (the modules of
  one package, e.g. a loader and ``brcd.data.base``),

never a module of a higher floor. Imports inside functions count as much as
those at the top: they are arrows of the same graph, they only run later. The
stages' floors follow the workflow's DAG (data -> features -> train -> encode
-> cluster -> select -> distill -> evaluate -> time), so the layout shows it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brcd"

#: (floor, units), from the ground up
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("brcd", "brcd.errors")),
    ("value rules", ("brcd.options",)),
    ("pure helpers", ("brcd.argtypes", "brcd.layout", "brcd.lambdas", "brcd.registry", "brcd.schema", "brcd.stats")),
    ("files", ("brcd.io",)),
    ("vocabulary", ("brcd.config", "brcd.codes")),
    ("cells and runtime", ("brcd.cells", "brcd.runtime")),
    ("components", ("brcd.augment", "brcd.data", "brcd.hashing", "brcd.models", "brcd.retrieval")),
    ("components built on components", ("brcd.checkpoint", "brcd.distill")),
    ("stage: split", ("brcd.data.split_cli",)),
    ("stage: features", ("brcd.features",)),
    ("stage: train", ("brcd.train",)),
    ("stage: encode", ("brcd.encode",)),
    ("stage: cluster and mask", ("brcd.cluster",)),
    ("stage: select λ", ("brcd.tuning",)),
    ("stage: distill", ("brcd.distill.train_student",)),
    ("stage: evaluate", ("brcd.evaluate",)),
    ("stage: time", ("brcd.timing",)),
    ("workflow glue", ("brcd.workflow", "brcd.checks", "brcd.runs", "brcd.scheduler")),
    ("report", ("brcd.report",)),
    ("command line", ("brcd.config_cli", "brcd.cli")),
    ("entry point", ("brcd.__main__",)),
)


def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of the package (a package is its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _owning_module(name: str, modules: dict[str, Path]) -> str:
    """The module ``name`` loads: itself, or the package that defines the imported name."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``brcd`` modules ``module`` imports anywhere in its file (top level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from brcd import cells` imports the module brcd.cells; `from brcd.io import x`, brcd.io
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(_owning_module(name, modules) for name in names if name.split(".")[0] == "brcd")
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def unit_of(module: str) -> tuple[int, str] | None:
    """(floor index, listed unit) of ``module``: the longest listed name that is it or holds it."""
    best = None
    for floor, (_, units) in enumerate(LAYERS):
        for unit in units:
            holds = module == unit or (unit != "brcd" and module.startswith(unit + "."))
            if holds and (best is None or len(unit) > len(best[1])):
                best = (floor, unit)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import that breaks the layer rule, as 'a (floor) imports b (floor)'."""
    problems = []
    for module, targets in sorted(graph.items()):
        floor, unit = unit_of(module)
        for target in sorted(targets):
            target_floor, target_unit = unit_of(target)
            if target_floor > floor or (target_floor == floor and target_unit != unit):
                problems.append(f"{module} ({LAYERS[floor][0]}) imports {target} ({LAYERS[target_floor][0]})")
    return problems


def test_every_module_has_a_floor():
    unplaced = [module for module in module_files() if unit_of(module) is None]
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_import_from_a_higher_floor():
    assert upward_imports(import_graph()) == []


def test_the_checks_catch_a_circle_and_an_upward_import():
    """Positive controls: the same functions on graphs that break each rule."""
    assert cycles({"brcd.a": {"brcd.b"}, "brcd.b": {"brcd.c"}, "brcd.c": {"brcd.a"}}) == [["brcd.a", "brcd.b", "brcd.c"]]
    assert upward_imports({"brcd.io": {"brcd.report"}}) == ["brcd.io (files) imports brcd.report (report)"]
    assert upward_imports({"brcd.cells": {"brcd.runtime"}}) == [
        "brcd.cells (cells and runtime) imports brcd.runtime (cells and runtime)"]
    assert upward_imports({"brcd.data.listfile": {"brcd.data.base"}}) == []


def test_function_level_and_package_imports_are_read(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from brcd import cells\n\ndef f():\n    from brcd.data.base import DATASETS\n    import brcd.io\n")
    found = imports_of("brcd.x", source, module_files())
    assert found == {"brcd.cells", "brcd.data.base", "brcd.io"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600, f"{path} is over 600 lines: split it by responsibility"
