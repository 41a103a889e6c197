"""The layers of docs/architecture.md, checked on the source: no import cycles among the
registry's modules, and each layer imports only the layers below it.

The import graph is read with the standard library's ``ast`` from every ``import`` and
``from ... import`` statement, wherever it stands: at the top of a module, inside a
function, or under ``if TYPE_CHECKING:``. A deferred import still couples two modules;
hiding a cycle inside a function is how cycles grow unnoticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("registry", "services")
GENERATED = "registry.v1"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            if not name.startswith(GENERATED):
                found[name] = path
    return found


def imported_names(name: str, path: Path) -> Iterator[str]:
    """Every module an import statement of ``path`` names: for ``from a import b``,
    ``a.b`` when that is one of the registry's modules, else ``a`` itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in known else target


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the registry's modules it imports."""
    known = modules()
    return {
        name: frozenset(t for t in imported_names(name, path) if t in known and t != name)
        for name, path in known.items()
    }


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    """The check below cannot pass by reading nothing: the graph holds the layers and
    the edges every settlement goes through."""
    edges = graph()
    assert len(edges) > 80
    assert "registry.domain.accounts" in edges["registry.application.registry"]
    assert any(t.startswith("registry.application") for t in edges["services.settlement"])


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert cycles(edges) == [["a", "b", "c"]]


def test_there_are_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (each list imports itself round):\n" + "\n".join(
        " -> ".join(component) for component in found
    )


# Which of the registry's packages each layer must never import (docs/architecture.md):
# dependencies point down, from the entry points to the domain.
FORBIDDEN = {
    "registry.domain": (
        "registry.application",
        "registry.persistence",
        "registry.readmodels",
        "registry.integrity",
        "registry.cli",
        "registry.client",
        "registry.bootstrap",
        "registry.settings",
        "registry.observability",
        "services",
    ),
    "registry.application": (
        "registry.cli",
        "registry.client",
        "registry.bootstrap",
        "registry.readmodels",
        "services",
    ),
    "registry.persistence": (
        "registry.application",
        "registry.cli",
        "registry.client",
        "registry.bootstrap",
        "services",
    ),
    "registry.readmodels": ("registry.cli", "registry.client", "registry.bootstrap", "services"),
    "registry.integrity": ("registry.cli", "registry.client", "registry.bootstrap", "services"),
    "registry.client": (
        "registry.application",
        "registry.persistence",
        "registry.readmodels",
        "registry.integrity",
        "registry.cli",
        "registry.bootstrap",
        "services",
    ),
    "registry.settings": (
        "registry.application",
        "registry.persistence",
        "registry.readmodels",
        "registry.integrity",
        "registry.cli",
        "registry.client",
        "registry.bootstrap",
        "services",
    ),
    "services": ("registry.cli", "registry.bootstrap"),
}

# The domain does no I/O: none of these may appear in it.
IO_MODULES = ("csv", "sqlite3", "psycopg", "sqlalchemy", "grpc", "socket", "subprocess")


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    edges = graph()
    members = [name for name in edges if within(name, layer)]
    assert members, f"no module in {layer}: update FORBIDDEN with the layout"
    wrong = sorted(
        f"{name} imports {target}"
        for name in members
        for target in edges[name]
        if any(within(target, forbidden) for forbidden in FORBIDDEN[layer])
    )
    assert not wrong, "\n".join(wrong)


def opened_files(path: Path) -> list[int]:
    """The lines of ``path`` that call the built-in ``open``."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
    ]


def test_the_domain_does_no_io() -> None:
    offenders = sorted(
        f"{name} imports {imported}"
        for name, path in modules().items()
        if within(name, "registry.domain")
        for imported in imported_names(name, path)
        if any(within(imported, io) for io in IO_MODULES)
        or imported in ("importlib.resources", "pathlib")
    )
    offenders += [
        f"{name} calls open() on line {line}"
        for name, path in modules().items()
        if within(name, "registry.domain")
        for line in opened_files(path)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_io_check_sees_a_file_opened(tmp_path: Path) -> None:
    """``open`` is a built-in, never imported: the check reads the calls themselves."""
    source = tmp_path / "reads.py"
    source.write_text("def rows(name):\n    with open(name) as f:\n        return f.read()\n")
    assert opened_files(source) == [2]
