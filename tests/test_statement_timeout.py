"""A database that does not answer costs a request ``statement_timeout`` seconds, not the driver's
30 (CONTRACT.md §4, "Bounded"): a slow statement on MariaDB ends at the server's
``max_statement_time``, a frozen server (a private ``mariadbd`` under SIGSTOP) at the driver's
read and connect timeouts, a frozen PostgreSQL at the store's watchdog. See docs/faults.md,
service/store/deadline.py and service/store/watchdog.py.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import require_server
from mariadb_instance import MariaDB, mariadb  # noqa: F401 - the fixture
from postgres_instance import PostgreSQL, postgres  # noqa: F401 - the fixture
from sdk_support import wait_for
from servers import service_process, write_config

from perfectqueue.errors import UnavailableError
from perfectqueue.service.store import Database


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


SLEEP = {"mysql": "SELECT SLEEP({})", "postgres": "SELECT pg_sleep({}) IS NULL"}
"""A statement that takes a while, answering 0 (false) when it ends normally."""


@pytest.mark.parametrize("backend", ["mysql", "postgres"])
def test_a_slow_statement_ends_at_the_deadline_and_the_connection_stays(backend: str) -> None:
    db = Database(require_server(backend), statement_timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="did not answer in time"):
            db.transaction(lambda conn: conn.execute(sa.text(SLEEP[backend].format(5))).scalar())
        assert time.monotonic() - started < 3
        assert db.transaction(lambda conn: conn.execute(sa.text("SELECT 1")).scalar()) == 1
        assert db.retried["reconnects"] == 0
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["mysql", "postgres"])
def test_schema_changes_run_without_the_deadline(backend: str) -> None:
    """``init`` (an index built on a large table) must not end at the deadline; the pool's
    connections keep it."""
    db = Database(require_server(backend), statement_timeout=1)
    sleep = sa.text(SLEEP[backend].format(2.5))
    try:
        with db.unbounded() as conn:
            assert not conn.execute(sleep).scalar()
        with pytest.raises(UnavailableError, match="did not answer in time"):
            db.transaction(lambda conn: conn.execute(sleep).scalar())
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_frozen_database_is_answered_503_within_the_statement_timeout(
    mariadb: MariaDB,  # noqa: F811
    tmp_path: Path,
) -> None:
    """SIGSTOP the database: /readyz, a submit and the stats each answer 503 (the API's with
    Retry-After) within statement_timeout (2) plus the driver's margin, again and again (they took
    29.9 s each with the driver's 30 s read timeout); SIGCONT: served again."""
    assert mariadb.proc is not None
    proc = mariadb.proc
    check_frozen(
        mariadb.url,
        tmp_path,
        lambda: proc.send_signal(signal.SIGSTOP),
        lambda: proc.send_signal(signal.SIGCONT),
    )


@pytest.mark.slow
def test_a_frozen_postgresql_is_answered_503_within_the_statement_timeout(
    postgres: PostgreSQL,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The same with every process of a private PostgreSQL stopped: its kernel still acknowledges
    the packets (so neither keepalives nor ``tcp_user_timeout`` fire) and psycopg has no read
    timeout; the store's watchdog cuts a statement a second after its deadline."""
    check_frozen(
        postgres.url,
        tmp_path,
        lambda: postgres.signal_all(signal.SIGSTOP),
        lambda: postgres.signal_all(signal.SIGCONT),
    )


def check_frozen(url: str, tmp_path: Path, freeze: Callable[[], None], thaw: Callable[[], None]) -> None:
    config = write_config(tmp_path / "service.yaml", url, "pq_frozen", statement_timeout=2)
    service = service_process(config, tmp_path / "service.log")
    with service as (base, _proc), httpx.Client(timeout=60) as client:
        queue = f"{base}/v1/queues/q"
        assert client.post(f"{queue}/submit", json={"id": "before", "type": "t"}).status_code == 201
        freeze()
        try:
            for attempt in range(2):  # the pool's connections first, then new ones (connect timeout)
                seconds, ready = timed(lambda: client.get(f"{base}/readyz"))
                assert ready.status_code == 503 and seconds < 6, (attempt, seconds)
                seconds, submit = timed(lambda: client.post(f"{queue}/submit", json={"id": "x", "type": "t"}))
                assert submit.status_code == 503 and seconds < 6, (attempt, seconds, submit.text)
                assert submit.headers["Retry-After"].isdigit()
                seconds, stats = timed(lambda: client.get(queue))
                assert stats.status_code == 503 and seconds < 6, (attempt, seconds)
            assert client.get(f"{base}/healthz").status_code == 200
        finally:
            thaw()
        wait_for(lambda: client.get(f"{base}/readyz").status_code == 200, timeout=30)
        assert client.post(f"{queue}/submit", json={"id": "after", "type": "t"}).status_code == 201
