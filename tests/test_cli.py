"""The ``perfectqueue`` command, run as real subprocesses (``python -m perfectqueue``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import drop_table
from servers import free_port, wait_ready, write_config

from perfectqueue import cli
from perfectqueue.service.openapi import document
from perfectqueue.service.store import Database


def clean_environ() -> dict[str, str]:
    """This process's environment without any PERFECTQUEUE_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}


def run(*args: str, cwd: Path | None = None, script: bool = False) -> subprocess.CompletedProcess[str]:
    """The command; ``script``: as its console script runs it (the current directory is not on
    ``sys.path``, as ``-m`` would put it)."""
    return subprocess.run(
        [sys.executable, *(["-P"] if script else []), "-m", "perfectqueue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=clean_environ(),
        check=False,
    )


@pytest.fixture
def database(db_url: str, table_name: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    drop_table(db, table_name)
    db.dispose()


def indexes(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        return {str(ix["name"]) for ix in sa.inspect(conn).get_indexes(table)}


def has_table(db: Database, table: str) -> bool:
    with db.engine.connect() as conn:
        return sa.inspect(conn).has_table(table)


# -- init ------------------------------------------------------------------------------------


def test_init_with_url_and_table_is_idempotent(db_url: str, table_name: str, database: Database) -> None:
    assert not has_table(database, table_name)
    first = run("init", "--url", db_url, "--table", table_name)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{table_name} ({table_name}): created table {table_name}")
    assert f"index_{table_name}_on_timeout" in first.stdout
    assert has_table(database, table_name)
    assert f"index_{table_name}_on_timeout" in indexes(database, table_name)

    second = run("init", "--url", db_url, "--table", table_name)
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"{table_name} ({table_name}): up to date\n"


def test_init_with_a_config_file(db_url: str, table_name: str, database: Database, tmp_path: Path) -> None:
    config = write_config(tmp_path / "perfectqueue.yml", db_url, table_name)
    first = run("init", "-c", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"q ({table_name}): created table {table_name}")
    assert has_table(database, table_name)
    second = run("init", "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"q ({table_name}): up to date\n"


def test_init_adds_a_missing_index(db_url: str, table_name: str, database: Database) -> None:
    assert run("init", "--url", db_url, "--table", table_name).returncode == 0
    with database.engine.begin() as conn:
        index = f"index_{table_name}_on_resource"
        conn.execute(sa.text(f"DROP INDEX {index}" + (f" ON {table_name}" if database.is_mysql else "")))
    again = run("init", "--url", db_url, "--table", table_name)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{table_name} ({table_name}): created index {index}\n"
    assert index in indexes(database, table_name)


# -- openapi ---------------------------------------------------------------------------------


def test_openapi_prints_the_document() -> None:
    result = run("openapi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(document()))


# -- refusals --------------------------------------------------------------------------------


def bad_configs(tmp_path: Path) -> dict[str, list[str]]:
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("url: sqlite:///x.sqlite3\nretension_time: 5\n")
    broken = tmp_path / "broken.yml"
    broken.write_text("url: [unclosed\n")
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"url: \xff\xfe\n")
    sections = tmp_path / "sections.yml"
    sections.write_text("production:\n  url: sqlite:///x.sqlite3\n")
    return {
        "unknown key": ["-c", str(unknown)],
        "broken yaml": ["-c", str(broken)],
        "missing file": ["-c", str(tmp_path / "absent.yml")],
        "not UTF-8": ["-c", str(binary)],
        "missing section": ["-c", str(sections), "-e", "staging"],
        "bad table": ["--url", "sqlite:///x.sqlite3", "--table", "x; DROP TABLE y"],
        "bad url": ["--url", "postgresql+psycopg2://app:hunter2@db/queue"],  # a driver not used here
    }


@pytest.mark.parametrize("command", ["init", "serve"])
def test_bad_config_exits_2_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad configuration in process (fast); one of them also as a real process below."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("PERFECTQUEUE_")]:
        monkeypatch.delenv(key)
    for name, args in bad_configs(tmp_path).items():
        extra = ["--port", str(free_port())] if command == "serve" else []
        assert cli.main([command, *args, *extra]) == 2, name
        out, err = capsys.readouterr()
        assert_one_line_error(name, out, err)
    assert not (tmp_path / "x.sqlite3").exists()


@pytest.mark.parametrize("command", ["init", "serve"])
def test_a_bad_config_ends_the_process_with_status_2(command: str, tmp_path: Path) -> None:
    result = run(command, *bad_configs(tmp_path)["bad url"], cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert_one_line_error("bad url", result.stdout, result.stderr)


def assert_one_line_error(name: str, out: str, err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, (name, err)
    assert lines[0].startswith("perfectqueue: error: "), (name, lines)
    assert "Traceback" not in err
    assert "hunter2" not in err
    assert out == ""


# -- serve -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_without_config_uses_the_defaults(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    log = tmp_path.parent / f"{tmp_path.name}-serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "perfectqueue", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=clean_environ(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        assert (tmp_path / "perfectqueue.sqlite3").is_file()
        with httpx.Client(base_url=base, timeout=10) as http:
            queues = http.get("/v1/queues").json()["queues"]
            assert [q["name"] for q in queues] == ["default"]
            assert http.post("/v1/queues/default/submit", json={"id": "a", "type": "t"}).status_code == 201
            (task,) = http.post("/v1/queues/default/poll", json={}).json()["tasks"]
            assert task["id"] == "a"
        assert f"127.0.0.1:{port}" in log.read_text()

        poll_result: dict[str, Any] = {}
        poller = threading.Thread(target=long_poll, args=(base, poll_result), daemon=True)
        poller.start()
        wait_for(lambda: "sent" in poll_result)
        stopping = time.monotonic()
        proc.send_signal(stop)
        assert proc.wait(timeout=15) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        assert time.monotonic() - stopping < 10
        poller.join(timeout=5)
        assert not poller.is_alive()
        # The long-poll in flight was answered at once with nothing (or refused if it came late).
        assert poll_result.get("tasks", []) == [], poll_result
        assert "tasks" in poll_result or isinstance(poll_result.get("error"), httpx.TransportError)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def long_poll(base: str, result: dict[str, Any]) -> None:
    def sent(_request: httpx.Request) -> None:
        result["sent"] = True

    try:
        with httpx.Client(timeout=30, event_hooks={"request": [sent]}) as http:
            response = http.post(base + "/v1/queues/default/poll", json={"wait": 20})
        result["tasks"] = response.json()["tasks"]
    except httpx.TransportError as exc:
        result["error"] = exc


def wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- run: finding the application ------------------------------------------------------------

APP = "from perfectqueue.worker import Dispatch\n\n\nclass Dispatcher(Dispatch):\n    pass\n\n\nhelper = 1\n"


def test_run_imports_the_application_from_the_current_directory(tmp_path: Path) -> None:
    """As the installed ``perfectqueue`` script does (``-P``: Python does not add the current
    directory itself), with no ``-I``; an application that cannot be used is one line."""
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(APP)
    (tmp_path / "myapp" / "needy.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "bad.yml").write_text("processors: zero\n")
    cases = {
        "myapp.tasks:Dispatcher": "processors must be",  # found; its configuration is read next
        "nothere.tasks:Dispatcher": "cannot import nothere.tasks: no module named 'nothere'",
        "myapp.absent:Dispatcher": "no module named 'myapp.absent'",
        "myapp.needy:Dispatcher": "it imports 'not_installed_anywhere', which is not found",
        "myapp.tasks:Missing": "cannot find Missing in module myapp.tasks",
        "myapp.tasks:helper": "myapp.tasks:helper is not a perfectqueue.worker Dispatch or Base subclass",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = pool.map(lambda app: run("run", app, "-c", "bad.yml", cwd=tmp_path, script=True), cases)
        done = dict(zip(cases, runs, strict=True))
    found = done.pop("myapp.tasks:Dispatcher")
    assert found.returncode == 2 and "Traceback" not in found.stderr, found.stderr
    assert found.stderr.splitlines()[-1].startswith("perfectqueue: error: processors must be"), found.stderr
    for app, result in done.items():
        assert result.returncode == 2, (app, result.stderr)
        assert_one_line_error(app, result.stdout, result.stderr)
        assert cases[app] in result.stderr, (app, result.stderr)


# -- help ------------------------------------------------------------------------------------


def test_the_help_speaks_to_users(capsys: pytest.CaptureFixture[str]) -> None:
    """No internal vocabulary or reST markup, and each command listed once (force-finish, the
    alias of force_finish, is accepted but not listed)."""
    (commands,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {}
    for command in [None, *commands.choices]:
        with pytest.raises(SystemExit) as exit:
            cli.main([command, "--help"] if command else ["--help"])
        assert exit.value.code == 0
        helps[command] = capsys.readouterr().out
    for command, text in helps.items():
        for unwanted in ("seed", "``", "==SUPPRESS=="):
            assert unwanted not in text, (command, unwanted, text)
    listed = [line.split()[0] for line in helps[None].splitlines() if line.startswith("    ")]
    listed = [name for name in listed if name in commands.choices]
    assert sorted(listed) == sorted(set(commands.choices) - {"force-finish"}), helps[None]
    assert "force-finish" not in helps[None]
    assert "last_error" in helps["list"]
