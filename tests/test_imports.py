"""The direction of dependency (STYLE.md): worker -> client -> (HTTP) -> service -> store.

The SDK and the worker never import the service, its web framework, SQLAlchemy or a database
driver: checked once by importing them in a fresh interpreter, once by reading their source.
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
FORBIDDEN = ("fastapi", "starlette", "sqlalchemy", "pymysql", "uvicorn", "perfectqueue.service")
LIGHT_MODULES = ["perfectqueue", "perfectqueue.errors", "perfectqueue.client", "perfectqueue.worker"]


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def loaded_by(*modules: str) -> list[str]:
    """The forbidden modules that importing ``modules`` in a fresh interpreter loads."""
    code = "import json, sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return [m for m in json.loads(result.stdout) if is_forbidden(m)]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_importing_the_sdk_side_loads_no_service_module(module: str) -> None:
    assert loaded_by(module) == []


def test_importing_all_of_the_sdk_side_loads_no_service_module() -> None:
    assert loaded_by(*LIGHT_MODULES) == []


def test_the_runtime_check_sees_the_service() -> None:
    found = loaded_by("perfectqueue.service.app")
    assert {"fastapi", "sqlalchemy", "perfectqueue.service"} <= set(found)


# -- the static walk -------------------------------------------------------------------------


def module_name(path: Path) -> str:
    """The dotted name of a file under client/ or worker/ (they are perfectqueue.client/.worker)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["perfectqueue", *parts])


def import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when the module is imported: not those inside functions (lazy imports)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from import_time_statements([c for c in children if isinstance(c, ast.stmt)])
                for child in children:
                    if isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from import_time_statements(child.body)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import that runs at import time."""
    package = module if is_package else module.rpartition(".")[0]
    for node in import_time_statements(ast.parse(source).body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def violations(path: Path) -> list[str]:
    module = module_name(path)
    found = imported_modules(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    return [f"{path.relative_to(ROOT)}:{line} imports {name}" for line, name in found if is_forbidden(name)]


def sdk_files() -> list[Path]:
    return sorted(p for d in ("client", "worker") for p in (ROOT / d).rglob("*.py"))


def test_sdk_and_worker_sources_import_nothing_of_the_service() -> None:
    files = sdk_files()
    assert files, "client/ and worker/ have no Python files"
    assert [v for path in files for v in violations(path)] == []


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
        ("def lazy():\n    import sqlalchemy", False),
        ("async def lazy():\n    from ..service import app", False),
        ("from .. import errors\nfrom ..errors import NotFoundError\nimport httpx", False),
        ("from . import service_client", False),
        ("import fastapi_like", False),
    ],
)
def test_the_static_walk_finds_what_it_should(source: str, forbidden: bool) -> None:
    found = [
        name for _, name in imported_modules(source, "perfectqueue.client.http", False) if is_forbidden(name)
    ]
    assert bool(found) is forbidden, found
