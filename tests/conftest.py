"""Fixtures shared by the suite: real databases (SQLite, MariaDB and PostgreSQL), never a mock.

MariaDB and PostgreSQL tests run whenever the server answers; with CI=true they fail (not skip)
when it does not. ``PERFECTQUEUE_TEST_MYSQL_URL`` and ``PERFECTQUEUE_TEST_POSTGRES_URL`` point
them at other servers.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import sqlalchemy as sa
from servers import running_service, write_config

from perfectqueue.service.config import settings_from
from perfectqueue.service.fastlane import FastLane
from perfectqueue.service.metrics import ServiceMetrics
from perfectqueue.service.runtime import QueueRuntime, Runner
from perfectqueue.service.store import Database, QueueStore
from perfectqueue.service.store.owners import SLOT, is_scheduled, scheduled, stamped_by_lease

MYSQL_URL = os.environ.get("PERFECTQUEUE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
POSTGRES_URL = os.environ.get("PERFECTQUEUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SERVERS = {"mysql": ("MariaDB/MySQL", MYSQL_URL), "postgres": ("PostgreSQL", POSTGRES_URL)}
"""The database servers the suite runs on beside SQLite: backend -> (name, url)."""
_reachable: dict[str, bool] = {}


def reachable(backend: str) -> bool:
    if backend not in _reachable:
        try:
            db = Database(SERVERS[backend][1])
            with db.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            db.dispose()
            _reachable[backend] = True
        except Exception:
            _reachable[backend] = False
    return _reachable[backend]


def mysql_reachable() -> bool:
    return reachable("mysql")


def require_server(backend: str) -> str:
    """The server's url, or skip (fail in CI) when it does not answer."""
    name, url = SERVERS[backend]
    if not reachable(backend):
        message = f"{name} is not reachable at {url}"
        if IN_CI:
            pytest.fail(message + " (mandatory in CI)")
        pytest.skip(message)
    return url


def require_mysql() -> str:
    """The MariaDB url, or skip (fail in CI) when the server does not answer."""
    return require_server("mysql")


def require_postgres() -> str:
    """The PostgreSQL url, or skip (fail in CI) when the server does not answer."""
    return require_server("postgres")


BACKENDS = ["sqlite", "mysql", "postgres"]


def backend_of(db: Database) -> str:
    """The backend name of a database: one of BACKENDS."""
    return "sqlite" if db.is_sqlite else "postgres" if db.is_postgres else "mysql"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database url for each backend; tests using it run once per backend."""
    if request.param in SERVERS:
        return require_server(request.param)
    return f"sqlite:///{tmp_path / 'queue.sqlite3'}"


@pytest.fixture
def table_name() -> str:
    return "t_" + uuid.uuid4().hex[:16]


@pytest.fixture
def service(tmp_path: Path, table_name: str) -> Iterator[str]:
    """The base url of a ``perfectqueue serve`` process over a fresh SQLite file (a module may
    define its own ``service``)."""
    config = write_config(tmp_path / "service.yaml", f"sqlite:///{tmp_path / 'q.sqlite3'}", table_name)
    with running_service(config, tmp_path / "service.log") as base:
        yield base


@pytest.fixture
def database(db_url: str, table_name: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    drop_table(db, table_name)
    db.dispose()


@pytest.fixture
def store(database: Database, table_name: str) -> QueueStore:
    """A fresh, initialised queue table on each backend (fair scheduling on, as by default)."""
    queue = QueueStore(database, table_name)
    queue.init()
    return queue


def drop_table(db: Database, table: str) -> None:
    with db.engine.begin() as conn:
        quoted = conn.dialect.identifier_preparer.quote_identifier(table)
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {quoted}"))


def db_now(store: QueueStore) -> int:
    """The database's clock, as the store sees it."""
    with store.db.engine.connect() as conn:
        return int(conn.execute(sa.select(store.db.now())).scalar_one())


def set_timeout(store: QueueStore, task_id: str, timeout: int) -> None:
    """Set a task's timeout directly: how tests move time for one task without waiting. An owner
    of ours carries the timeout it was written with (service/store/owners.py): it moves too, as
    if its lease or schedule had been written for this time."""
    with store.db.engine.begin() as conn:
        conn.execute(moved(store.table, timeout).where(store.table.c.id == task_id))


def moved(table: sa.Table, timeout: Any) -> sa.Update:
    """An UPDATE of rows to ``timeout`` (an int or an expression of the row), their owner's stamp
    with them. The owner is set first: MySQL reads a column set earlier in the list at its new value."""
    t = table.c
    owner = sa.case(
        (is_scheduled(t.owner, t.timeout), scheduled(timeout)),
        (stamped_by_lease(t.owner, t.timeout), t.owner - t.owner % SLOT + timeout % SLOT),
        else_=t.owner,
    )
    return sa.update(table).ordered_values((t.owner, owner), (t.timeout, timeout))


def expire_lease(store: QueueStore, task_id: str) -> None:
    """Move a running task's lease into the past: what waiting alive_time seconds would do."""
    set_timeout(store, task_id, db_now(store) - 1)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """A store call in a worker thread, as the service runs it."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args))


def queue_runtime(store: QueueStore, run: Runner = in_thread, **settings: Any) -> QueueRuntime:
    """The runtime the service builds for a queue, over ``store``, its store calls run by ``run``
    (the service's runs them in its worker threads)."""
    served = settings_from({"table": store.table.name, **settings})
    return QueueRuntime(served.queue(store.table.name), served, store, run, ServiceMetrics().queue("q"))


def fast_lane(client: Any) -> FastLane:
    """The short path of a TestClient's app (its ASGI layers unwrapped down to it)."""
    app: Any = client.app.middleware_stack
    while not isinstance(app, FastLane):
        app = app.app
    return app
