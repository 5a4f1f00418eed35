"""No import cycle in the package (STYLE.md: the app factory imports everything and nothing imports
it; types live with the module that owns the concept).

Every import of every module counts: at import time, under ``TYPE_CHECKING`` and inside functions
(a lazy import that closes a cycle still ties the two modules together). Importing a submodule is
an edge to that submodule only, not to the packages above it: a package whose ``__init__``
gathers its submodules' names is not a cycle.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "perfectqueue"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (its parts are linked in: followed)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                parts = list(Path(folder, file).relative_to(PACKAGE).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(["perfectqueue", *parts])] = Path(folder, file)
    return found


def imports(source: str, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The modules of ``known`` that the imports in ``source`` name: ``from a import b`` names the
    module ``a.b`` if there is one, else (a name defined in ``a``) the module ``a``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                above = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{above}.{base}" if node.module else above
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known, edges = set(found), {}
    for name, path in found.items():
        named = imports(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        edges[name] = {target for target in named if target in known and target != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    found = modules()
    assert "perfectqueue.service.app" in found and "perfectqueue.client.queue" in found
    assert cycles(graph(found)) == []


def test_nothing_imports_the_app_factory() -> None:
    edges = graph(modules())
    importers = {name for name, targets in edges.items() if "perfectqueue.service.app" in targets}
    assert importers <= {"perfectqueue.service.server", "perfectqueue.service.openapi"}


@pytest.mark.parametrize(
    ("sources", "cyclic"),
    [
        ({"a": "from . import b", "b": "from .c import x", "c": "import pkg.a"}, True),
        (
            {
                "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import T",
                "b": "from .a import U",
            },
            True,
        ),
        ({"a": "def lazy():\n    from .b import f", "b": "from . import a"}, True),
        ({"a": "from .b import f", "b": "from .c import g", "c": "import os"}, False),
        ({"a": "from .b import f", "b": "import os"}, False),
    ],
)
def test_the_walk_finds_cycles_it_should(sources: dict[str, str], cyclic: bool) -> None:
    known = {f"pkg.{name}" for name in sources}
    edges = {
        module: {t for t in imports(sources[module[4:]], module, False, known) if t in known and t != module}
        for module in known
    }
    assert bool(cycles(edges)) is cyclic, edges
