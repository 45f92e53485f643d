"""Dependencies point one way (shared/STYLE.md): services/ never imports training/, benchmarks/ or tests/;
services/core imports only the standard library and third-party packages; services' modules form no cycle.

Imports are read with `ast` from the source, every import statement wherever it is (inside functions too,
where a lazy import would otherwise hide an upward edge or a cycle), except under `if TYPE_CHECKING:`,
which never runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_THE_PRODUCT = ("training", "benchmarks", "tests")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SERVICES: dict[str, Path] = {_module_name(p): p for p in sorted((ROOT / "services").rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if _is_type_checking_block(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def imported_modules(path: Path) -> set[str]:
    """The modules `path` imports; `from package import name` counts as `package.name` when that is a
    module of services, else as `package`."""
    module = _module_name(path)
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            found.add(candidate if candidate in SERVICES else base)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def test_services_never_imports_training_benchmarks_or_tests() -> None:
    upward = {
        f"{module} imports {name}"
        for module, path in SERVICES.items()
        for name in imported_modules(path)
        if _top(name) in OUTSIDE_THE_PRODUCT
    }
    assert not upward, sorted(upward)


def test_core_imports_only_the_standard_library_third_party_and_core() -> None:
    above = {
        f"{module} imports {name}"
        for module, path in SERVICES.items()
        if module.startswith("services.core")
        for name in imported_modules(path)
        if (_top(name) == "services" and not name.startswith("services.core"))
        or _top(name) in OUTSIDE_THE_PRODUCT
    }
    assert not above, sorted(above)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_find_cycles_sees_a_cycle_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_services_modules_import_each_other_without_cycles() -> None:
    # Every import counts, lazy ones inside functions too: a cycle hidden by a local import is still one.
    graph = {
        module: {name for name in imported_modules(path) if name in SERVICES and name != module}
        for module, path in SERVICES.items()
    }
    assert not find_cycles(graph)
