"""The client's bound on a PostgreSQL statement: a server that does not answer at all.

PostgreSQL's own ``statement_timeout`` ends a slow statement, but a server that stops answering
(frozen by SIGSTOP, a stalled disk or VM, a network path that drops packets without a reset)
cannot end it, and psycopg has no read timeout: the request would wait until the operating
system gives the connection up (TCP retransmissions: about 15 minutes). Keepalives and libpq's
``tcp_user_timeout`` (see :data:`KEEPALIVES`) end a connection whose packets go unacknowledged,
but a frozen server's kernel still acknowledges them. So one thread per process watches every
statement of the engines it is attached to: a statement still running ``CLIENT_MARGIN`` seconds
after its deadline has its socket shut down, which makes psycopg raise at once; the error is
marked (:func:`passed_deadline`) so the store answers 503 without the reconnect-and-retry a
dropped connection otherwise gets (it would wait as long again). A statement on a connection
whose deadline was lifted (schema changes, :func:`lift`) is not watched.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .deadline import CLIENT_MARGIN

NO_DEADLINE = "perfectqueue_no_deadline"
PASSED = "perfectqueue_deadline_passed"
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""libpq's TCP keepalives: an idle connection to a host that went away fails within about 25 s."""


class Watchdog:
    """The statements running now on watched connections, and the thread that cuts late ones."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[float, Any]] = {}  # id(dbapi connection) -> (cut at, it)
        self._cut: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def attach(self, engine: Engine, seconds: float) -> None:
        """Watch every statement of ``engine``, whose deadline is ``seconds``."""

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _start(conn: Connection, *_: Any) -> None:
            if not conn.get_execution_options().get(NO_DEADLINE):
                self._begin(conn.connection.dbapi_connection, time.monotonic() + seconds + CLIENT_MARGIN)

        @sa.event.listens_for(engine, "after_cursor_execute")
        def _end(conn: Connection, *_: Any) -> None:
            self._end(conn.connection.dbapi_connection)

        @sa.event.listens_for(engine, "handle_error")
        def _failed(context: sa.engine.ExceptionContext) -> None:
            dbapi = None if context.connection is None else context.connection.connection.dbapi_connection
            if self._end(dbapi) and context.sqlalchemy_exception is not None:
                setattr(context.sqlalchemy_exception, PASSED, True)

    def _begin(self, dbapi: Any, cut_at: float) -> None:
        with self._lock:
            self._running[id(dbapi)] = (cut_at, dbapi)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="pq-statement-watchdog", daemon=True)
                self._thread.start()

    def _end(self, dbapi: Any) -> bool:
        """The statement on ``dbapi`` is over; was its connection cut?"""
        with self._lock:
            self._running.pop(id(dbapi), None)
            if id(dbapi) in self._cut:
                self._cut.discard(id(dbapi))
                return True
            return False

    def _watch(self) -> None:
        while True:
            time.sleep(CLIENT_MARGIN / 4)
            now = time.monotonic()
            with self._lock:
                late = [(key, dbapi) for key, (cut_at, dbapi) in self._running.items() if cut_at <= now]
                for key, _ in late:
                    del self._running[key]
                    self._cut.add(key)
            for _, dbapi in late:
                _shut_down(dbapi)


def _shut_down(dbapi: Any) -> None:
    """Shut the connection's socket down (both ways): psycopg's wait for the server ends."""
    try:
        sock = socket.socket(fileno=os.dup(dbapi.pgconn.socket))
    except Exception:  # closed meanwhile (OSError, psycopg's error): nothing left to cut
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


WATCHDOG = Watchdog()


def lift(conn: Connection) -> None:
    """No client-side deadline for the statements ``conn`` runs next."""
    conn.execution_options(**{NO_DEADLINE: True})


def passed_deadline(exc: BaseException) -> bool:
    """Did the watchdog cut the connection of the statement that raised ``exc``?"""
    return bool(getattr(exc, PASSED, False))
