"""The direction of dependency (STYLE.md): worker -> client -> (HTTP) -> service -> store.

The SDK side (the package root src/perfectqueue/: the command, the errors, the settings…; the
SDK, client/; the worker, worker/) never imports the service, its web framework, SQLAlchemy or a
database driver: checked by importing every module of it in a fresh interpreter, by running a
task command, and by reading every file's source, imports inside functions included. The few
places that import the service on purpose, for an explicit choice of the user, are listed in
LAZY_SERVICE_IMPORTS with the reason.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "perfectqueue"
FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "pymysql", "uvicorn", "pydantic", "perfectqueue.service")
LIGHT_MODULES = ["perfectqueue", "perfectqueue.errors", "perfectqueue.client", "perfectqueue.worker"]

LAZY_SERVICE_IMPORTS: dict[tuple[str, str | None], str] = {
    ("perfectqueue.client._rdb", None): "the direct rdb_compat backend: a queue opened with type: rdb_compat",
    ("perfectqueue.cli", "_settings"): "`serve` and `init` read the service's settings",
    ("perfectqueue.cli", "_serve"): "`perfectqueue serve` runs the service",
    ("perfectqueue.cli", "_init"): "`perfectqueue init` creates the service's tables",
    ("perfectqueue.cli", "_keygen"): "`perfectqueue keygen` prints an entry of the service's settings",
    ("perfectqueue.cli", "_openapi"): "`perfectqueue openapi` prints the service's document",
}
"""(module, function) -> why it may import the service inside that function (None: any
function of the module; its import-time imports are still checked)."""


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def loaded_by(*modules: str, then: str = "") -> list[str]:
    """The forbidden modules that importing ``modules`` (and running ``then``) in a fresh
    interpreter loads."""
    code = "import json, sys\n" + "".join(f"import {m}\n" for m in modules) + then
    code += "print(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return [m for m in json.loads(result.stdout.splitlines()[-1]) if is_forbidden(m)]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_importing_the_sdk_side_loads_no_service_module(module: str) -> None:
    assert loaded_by(module) == []


def test_importing_all_of_the_sdk_side_loads_no_service_module() -> None:
    assert loaded_by(*LIGHT_MODULES) == []


def test_importing_every_module_of_the_sdk_side_loads_no_service_module() -> None:
    modules = [module_name(path) for path in sdk_files() if path.name != "__main__.py"]  # it runs the CLI
    assert "perfectqueue.cli" in modules and "perfectqueue.client._rdb" in modules
    assert loaded_by(*modules, then="perfectqueue.cli.build_parser()\n") == []


def test_a_task_command_with_a_config_file_loads_no_service_module(tmp_path: Path) -> None:
    config = tmp_path / "perfectqueue.yml"
    config.write_text("development:\n  url: http://127.0.0.1:9\n  queue: q\n  retries: 0\n", encoding="utf-8")
    run = f"from perfectqueue.cli import main\nassert main(['list', '-c', {str(config)!r}]) == 2\n"
    assert loaded_by("perfectqueue.cli", then=run) == []


def test_the_runtime_check_sees_the_service() -> None:
    found = loaded_by("perfectqueue.service.app")
    assert {"fastapi", "sqlalchemy", "perfectqueue.service"} <= set(found)


# -- the static walk -------------------------------------------------------------------------


def module_name(path: Path) -> str:
    """The dotted name of a file of the package root, client/ or worker/."""
    base = PACKAGE if path.is_relative_to(PACKAGE) else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["perfectqueue", *parts])


class Imports(ast.NodeVisitor):
    """Every import of a module: (line, absolute module name, enclosing function or None)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.scope: list[str] = []
        self.functions = 0
        self.found: list[tuple[int, str, str | None]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node.lineno, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        self._add(node.lineno, target)
        for alias in node.names:
            self._add(node.lineno, f"{target}.{alias.name}")

    def _add(self, line: int, name: str) -> None:
        self.found.append((line, name, ".".join(self.scope) if self.functions else None))


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, str | None]]:
    """(line, absolute module name, enclosing function or None) of every import, lazy ones too."""
    visitor = Imports(module, is_package)
    visitor.visit(ast.parse(source))
    yield from visitor.found


def allowed(module: str, function: str | None) -> bool:
    """Is this lazy import of the service one of the deliberate ones?"""
    return function is not None and (
        (module, None) in LAZY_SERVICE_IMPORTS or (module, function) in LAZY_SERVICE_IMPORTS
    )


def violations(path: Path) -> list[str]:
    module = module_name(path)
    found = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}" + (f" (in {function})" if function else "")
        for line, name, function in found
        if is_forbidden(name) and not allowed(module, function)
    ]


def sdk_files() -> list[Path]:
    """The package root's own files (not the service/, client/ and worker/ links) and the SDK's
    and the worker's."""
    root = [p for p in PACKAGE.glob("*.py") if not p.is_symlink()]
    return sorted([*root, *(p for d in ("client", "worker") for p in (ROOT / d).rglob("*.py"))])


def test_sdk_and_worker_sources_import_nothing_of_the_service() -> None:
    files = sdk_files()
    names = {module_name(p) for p in files}
    assert {"perfectqueue", "perfectqueue.cli", "perfectqueue.commands", "perfectqueue.errors"} <= names
    assert {"perfectqueue.client", "perfectqueue.worker.config"} <= names
    assert [v for path in files for v in violations(path)] == []


def test_every_allowed_lazy_import_exists() -> None:
    """The allow-list stays as small as the code: an entry nothing uses is an error."""
    used = set()
    for path in sdk_files():
        module = module_name(path)
        source = path.read_text(encoding="utf-8")
        for _, name, function in imported_modules(source, module, path.name == "__init__.py"):
            if is_forbidden(name) and allowed(module, function):
                key = (module, None) if (module, None) in LAZY_SERVICE_IMPORTS else (module, function)
                used.add(key)
    assert set(LAZY_SERVICE_IMPORTS) == used


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("import sqlalchemy", True),
        ("import sqlalchemy.orm as orm", True),
        ("from fastapi import FastAPI", True),
        ("from ..service import app", True),
        ("from .. import service", True),
        ("from ..service.store import Task", True),
        ("from perfectqueue.service.config import Settings", True),
        ("try:\n    import pymysql\nexcept ImportError:\n    pymysql = None", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from starlette.requests import Request",
            True,
        ),
        ("class C:\n    import uvicorn", True),
        ("def lazy():\n    import sqlalchemy", True),  # lazy imports count
        ("async def lazy():\n    from ..service import app", True),
        ("class C:\n    def lazy(self):\n        import pydantic", True),
        ("from .. import errors\nfrom ..errors import NotFoundError\nimport httpx", False),
        ("from . import service_client", False),
        ("import fastapi_like", False),
    ],
)
def test_the_static_walk_finds_what_it_should(source: str, forbidden: bool) -> None:
    found = [
        name
        for _, name, function in imported_modules(source, "perfectqueue.client.http", False)
        if is_forbidden(name) and not allowed("perfectqueue.client.http", function)
    ]
    assert bool(found) is forbidden, found


@pytest.mark.parametrize(
    ("module", "source", "forbidden"),
    [
        (
            "perfectqueue.client._rdb",
            "class B:\n    def __init__(self):\n        from ..service import store",
            False,
        ),
        ("perfectqueue.client._rdb", "from ..service import store", True),  # at import time: never
        ("perfectqueue.cli", "def _serve(args):\n    from .service.server import serve", False),
        ("perfectqueue.cli", "def list_tasks(args):\n    from .service.config import read_yaml", True),
        ("perfectqueue.commands", "def _serve(args):\n    from .service.server import serve", True),
    ],
)
def test_the_allow_list_allows_only_its_functions(module: str, source: str, forbidden: bool) -> None:
    found = [
        name
        for _, name, function in imported_modules(source, module, False)
        if is_forbidden(name) and not allowed(module, function)
    ]
    assert bool(found) is forbidden, found


# -- no import cycle -------------------------------------------------------------------------


def package_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when imported (type-only imports included)."""
    files = {module_name(p): p for p in PACKAGE.glob("*.py") if not p.is_symlink()}
    for d in ("client", "worker", "service"):
        files.update({module_name(p): p for p in (ROOT / d).rglob("*.py")})
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
        graph[module] = {name for _, name, function in found if function is None and name in files} - {module}
    return graph


def test_config_and_security_import_each_other_in_no_direction_but_one() -> None:
    graph = package_graph()
    assert "perfectqueue.service.config" in graph["perfectqueue.service.security"]
    assert reaches(graph, "perfectqueue.service.config", "perfectqueue.service.security") == []


def test_the_settings_modules_import_no_part() -> None:
    graph = package_graph()
    for module in ("perfectqueue.settings", "perfectqueue.configfile"):
        parts = [m for m in graph[module] if m.startswith(("perfectqueue.service", "perfectqueue.client"))]
        assert parts == [], module


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """A path of imports from ``start`` to ``goal`` (empty: none)."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == goal:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return []
