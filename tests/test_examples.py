"""The examples in examples/, run as a user would against a real service over SQLite.

The curl tour needs curl; the Node.js example needs node and npm, installs its locked
dependencies with ``npm ci``, generates its types from openapi/openapi.json and type-checks
itself before it runs. A missing tool skips these tests locally and fails them with CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import IN_CI
from servers import running_service, write_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NODE_EXAMPLE = EXAMPLES / "node"
TOUR = EXAMPLES / "curl" / "tour.sh"
QUEUE = "q"  # the one queue that write_config declares

pytestmark = pytest.mark.slow


def require(tool: str) -> str:
    """The path of ``tool``; skip when it is missing (fail in CI, where it is mandatory)."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed"
        if IN_CI:
            pytest.fail(message + " (mandatory in CI)")
        pytest.skip(message)
    return path


def run(args: list[str], cwd: Path, timeout: float) -> str:
    """Run a command; its combined output, or fail the test showing that output."""
    quiet_npm = {f"npm_config_{key}": "false" for key in ("audit", "fund", "update_notifier")}
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, **quiet_npm},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} exited with {result.returncode}:\n{output}"
    return output


def tasks_of(base: str) -> list[dict[str, Any]]:
    """Every task of the queue, read through the service."""
    with httpx.Client(base_url=base, timeout=10) as client:
        response = client.get(f"/v1/queues/{QUEUE}/tasks", params={"limit": 1000, "include": "data"})
    response.raise_for_status()
    page: dict[str, Any] = response.json()
    assert page["next_cursor"] is None
    tasks: list[dict[str, Any]] = page["tasks"]
    return tasks


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """A real service with one empty queue ``q`` over a SQLite file; its base url."""
    config = write_config(tmp_path / "perfectqueue.yml", f"sqlite:///{tmp_path / 'queue.sqlite3'}", "t_q")
    with running_service(config, tmp_path / "service.log") as base:
        yield base


# -- curl ------------------------------------------------------------------------------------


@pytest.fixture
def sh() -> str:
    """The shell to run the tour with, once curl is known to be there."""
    require("curl")
    return require("sh")


def test_curl_tour_takes_a_task_through_its_life(sh: str, service: str) -> None:
    output = run([sh, str(TOUR), service, QUEUE], cwd=TOUR.parent, timeout=60)

    assert "code: already_exists" in output  # the duplicate submit's 409 problem
    [task] = tasks_of(service)
    assert task["id"].startswith("tour-")
    assert task["status"] == "finished"
    assert task["data"] == {"to": "ann@example.com", "step": 2}  # stored by the heartbeat
    assert f"task {task['id']} is finished" in output


def test_curl_tour_stops_on_an_unexpected_status(sh: str, service: str) -> None:
    # A queue the service does not declare: the first submit answers 404 unknown_queue.
    result = subprocess.run(
        [sh, str(TOUR), service, "undeclared"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "expected HTTP 201, got 404" in result.stderr
    assert "unknown_queue" in result.stdout
    assert tasks_of(service) == []


# -- Node.js ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """node, once the example's dependencies are installed, its types generated and checked."""
    npm = require("npm")
    node = require("node")
    run([npm, "ci", "--no-progress"], cwd=NODE_EXAMPLE, timeout=75)
    run([npm, "run", "generate"], cwd=NODE_EXAMPLE, timeout=30)
    assert (NODE_EXAMPLE / "schema.d.ts").is_file()
    run([npm, "run", "check"], cwd=NODE_EXAMPLE, timeout=60)
    return node


def test_node_example_submits_works_and_finishes_every_task(node: str, service: str) -> None:
    output = run([node, "example.js", service, QUEUE, "7"], cwd=NODE_EXAMPLE, timeout=60)

    assert "HTTP 409, code already_exists" in output
    assert "all 7 tasks finished" in output
    tasks = tasks_of(service)
    assert len(tasks) == 7
    assert {t["status"] for t in tasks} == {"finished"}
    assert all(t["type"] == "resize_image" for t in tasks)
    assert all(t["data"]["thumbnail"] == f"thumb-{t['data']['image']}" for t in tasks)  # the heartbeat


def test_node_example_fails_when_the_service_refuses(node: str, service: str) -> None:
    result = subprocess.run(
        [node, "example.js", service, "undeclared", "3"],
        cwd=NODE_EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "submit answered HTTP 404 unknown_queue" in result.stderr
    assert tasks_of(service) == []
