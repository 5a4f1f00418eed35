"""The SDK-only install: the wheel, installed with no extras, is the SDK, its task commands and
the worker, and the commands that need more say which extra in one line.

The wheel's dependencies are resolved by pip from the package index, as a user's install would:
that is what shows the wheel declares httpx alone and that httpx alone is enough (installing it
with ``--no-deps`` and httpx by name would pass even if the wheel required pydantic). pip's
cache keeps a rerun quick. The service the SDK talks to runs from the test's own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from servers import running_service, write_config

ROOT = Path(__file__).resolve().parent.parent
SERVICE_ONLY = ("pydantic", "fastapi", "starlette", "sqlalchemy", "pymysql", "uvicorn", "yaml")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SDK_SCRIPT = """
import json, sys
import perfectqueue

with perfectqueue.open({"url": sys.argv[1], "queue": "q"}) as queue:
    queue.submit("sdk-1", "t", {"n": 1})
    task = queue.poll()
    assert task is not None and task.key == "sdk-1", task
    task.finish()
    status = queue["sdk-1"].metadata().status
heavy = [m for m in sys.modules if m.split(".")[0] in sys.argv[2:] or m.startswith("perfectqueue.service")]
print(json.dumps({"status": status, "loaded": sorted(heavy)}))
"""


def pip(*args: str) -> None:
    """The test environment's pip (``--python`` points it at the new environment)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (the build leaves its files in the copy, not here)."""
    source = tmp / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "service", "client", "worker"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    pip("wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(source))
    [wheel] = (tmp / "dist").glob("perfectqueue-*.whl")
    return wheel


def check_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    for part in (
        "service/app.py",
        "service/store/queue.py",
        "service/dashboard/static/index.html",
        "client/_rdb.py",
    ):
        assert f"perfectqueue/{part}" in names, part  # src/perfectqueue/{service,client,worker} are links
    assert {"perfectqueue/worker/config.py", "perfectqueue/settings.py", "perfectqueue/py.typed"} <= names
    requires = [line for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert [r.split(":", 1)[1].split(">")[0].strip() for r in requires] == ["httpx"]
    assert "Provides-Extra: yaml" in lines and "Provides-Extra: service" in lines
    assert "License-Expression: Apache-2.0" in lines and "License-File: LICENSE" in lines
    [licence] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(licence).decode()
    assert text == (ROOT / "LICENSE").read_text() and "Apache License\n" in text
    assert "Version 2.0, January 2004" in text


def new_environment(tmp: Path, wheel: Path) -> Path:
    """A fresh virtual environment with the wheel and what it requires (no extra); its bin/."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    pip("--python", str(venv / "bin" / "python"), "install", "-q", str(wheel))
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PERFECTQUEUE_"))}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def one_line_naming(done: subprocess.CompletedProcess[str], extra: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("perfectqueue: error:")]
    assert len(lines) == 1 and f"pip install 'perfectqueue[{extra}]'" in lines[0], done.stderr


def test_the_sdk_alone_installs_works_and_names_the_extras_it_lacks(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    check_contents(wheel)
    bin_dir = new_environment(tmp_path, wheel)
    found = run(
        bin_dir,
        "python",
        "-c",
        f"import importlib.util as u; print([m for m in {SERVICE_ONLY} if u.find_spec(m)])",
        cwd=tmp_path,
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr

    service = write_config(tmp_path / "service.yml", f"sqlite:///{tmp_path / 'q.sqlite3'}", "wheel_tasks")
    with running_service(service) as base:
        sdk = run(bin_dir, "python", "-c", SDK_SCRIPT, base, *SERVICE_ONLY, cwd=tmp_path)
        assert sdk.returncode == 0, sdk.stderr
        assert json.loads(sdk.stdout) == {"status": "finished", "loaded": []}

        flags = ("--url", base, "--queue", "q")
        submitted = run(bin_dir, "perfectqueue", "submit", "cli-1", "t", '{"n": 2}', *flags, cwd=tmp_path)
        assert submitted.returncode == 0 and "submitted cli-1" in submitted.stdout, submitted.stderr
        listed = run(bin_dir, "perfectqueue", "list", "--json", *flags, cwd=tmp_path)
        assert {json.loads(line)["key"] for line in listed.stdout.splitlines()} == {"sdk-1", "cli-1"}

        config = tmp_path / "perfectqueue.yml"
        config.write_text(f"development:\n  url: {base}\n  queue: q\n", encoding="utf-8")
        (tmp_path / "app").mkdir()
        (tmp_path / "app" / "wheelapp.py").write_text(
            "from perfectqueue.worker import Dispatch\n\n\nclass App(Dispatch):\n    pass\n", encoding="utf-8"
        )
        one_line_naming(run(bin_dir, "perfectqueue", "list", "-c", str(config), cwd=tmp_path), "yaml")
        one_line_naming(
            run(bin_dir, "perfectqueue", "run", "wheelapp:App", "-I", "app", "-c", str(config), cwd=tmp_path),
            "yaml",
        )
        for command in (["serve"], ["init", "--url", "sqlite://"], ["keygen"], ["openapi"]):
            one_line_naming(run(bin_dir, "perfectqueue", *command, cwd=tmp_path), "service")

        pip("--python", str(bin_dir / "python"), "install", "-q", f"perfectqueue[yaml] @ {wheel.as_uri()}")
        submitted = run(
            bin_dir, "perfectqueue", "submit", "cli-2", "t", "{}", "-c", str(config), cwd=tmp_path
        )
        assert submitted.returncode == 0, submitted.stderr
        listed = run(bin_dir, "perfectqueue", "list", "--json", "-c", str(config), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert {json.loads(line)["key"] for line in listed.stdout.splitlines()} == {"sdk-1", "cli-1", "cli-2"}
