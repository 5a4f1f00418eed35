"""``/readyz`` answers anyone (no key), so while a database refuses it says so in general terms:
the database's host, the user and the driver's message go to the service's log, not to the caller.
"""

from __future__ import annotations

import logging
import socket
import warnings
from collections.abc import Iterator

import pytest
from conftest import SERVERS, require_server
from sqlalchemy.engine import make_url

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from

with warnings.catch_warnings():
    # starlette asks for httpx2 (not a dependency of this project) with a warning at import.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

USER = "pq_readyz_nobody"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wrong_user(backend: str) -> str:
    url = make_url(require_server(backend))
    return url.set(username=USER, password="not-the-password").render_as_string(False)


def closed_port(backend: str) -> str:
    scheme = "mysql" if backend == "mysql" else "postgresql"
    return f"{scheme}://{USER}@127.0.0.1:{unused_port()}/test"


@pytest.fixture(
    params=[(how, backend) for backend in SERVERS for how in (wrong_user, closed_port)],
    ids=[f"{backend}-{how}" for backend in SERVERS for how in ("wrong-user", "closed-port")],
)
def refused(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """A service whose one queue's database refuses it."""
    how, backend = request.param
    url = how(backend)
    app = create_app(settings_from({"url": url, "queues": {"secretqueue": {"table": "t_readyz"}}}))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_readyz_names_no_host_user_or_driver_message(
    refused: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="perfectqueue.service"):
        response = refused.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"  # as the API's own 503s
    assert response.json() == {"status": "unavailable", "detail": "a database did not answer"}
    for secret in (
        "127.0.0.1",
        "localhost",
        USER,
        "Access denied",
        "connect",
        "database error",
        "secretqueue",
    ):
        assert secret not in response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "perfectqueue.service"]
    assert any("readyz" in line and "secretqueue" in line and "database error" in line for line in logged), (
        logged
    )
    assert any(USER in line or "127.0.0.1" in line for line in logged), logged
