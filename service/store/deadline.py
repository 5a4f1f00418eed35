"""How long one database statement may take (``statement_timeout``), on MySQL and MariaDB.

A database that stops answering (frozen, overloaded, cut off without a reset) would otherwise
hold every request that reaches it for as long as the driver's socket waits. Two bounds:

- the server's own, where it has one: MariaDB's ``max_statement_time`` (seconds, per session)
  ends a statement running longer with error 1969, the connection still usable; the request is
  answered 503 (nothing is retried: it would wait as long again);
- the client's: PyMySQL's connect, read and write timeouts, one second longer than the server's,
  so that they fire only when the server does not answer at all (a frozen or unreachable one).
  The connection is then dropped and the request answered 503, without the reconnect-and-retry
  that a dropped connection otherwise gets (it would wait as long again); with several Galera
  nodes the transaction moves to the next node, as for any node error.

MySQL has no per-statement limit for writes (``max_execution_time`` applies to SELECTs only), so
there only the client's bound applies. SQLite waits for its file lock (``busy_timeout``) instead.
A long-poll holds no statement while it waits, so none of this shortens it. Schema changes
(``init``: an index built on a large table takes minutes) run on a connection with both bounds
lifted (:func:`lift`), which is then closed rather than handed back to the pool.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

CLIENT_MARGIN = 1.0
"""Seconds the driver waits beyond the server's limit (a server that answers says so first)."""

STATEMENT_TIMED_OUT = 1969  # MariaDB: "Query execution was interrupted (max_statement_time exceeded)"


def mysql_connect_args(seconds: float) -> dict[str, Any]:
    """PyMySQL's timeouts for a statement deadline of ``seconds``."""
    client = seconds + CLIENT_MARGIN
    return {"connect_timeout": math.ceil(client), "read_timeout": client, "write_timeout": client}


def attach_mysql_deadline(engine: Engine, seconds: float) -> None:
    """Every new MariaDB session of ``engine`` gets ``max_statement_time`` = ``seconds``."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if "mariadb" in dbapi_conn.get_server_info().lower():
            _set_max_statement_time(dbapi_conn, seconds)


def _set_max_statement_time(dbapi_conn: Any, seconds: float) -> None:
    """Through the driver's cursor: a statement through SQLAlchemy would begin a transaction."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SET SESSION max_statement_time = %s", (seconds,))
    finally:
        cursor.close()


def lock_wait(seconds: float | None, longest: int) -> int:
    """How long a ``GET_LOCK`` may wait under a statement deadline of ``seconds`` (None: none):
    whole seconds, at least one, at most ``longest``, and less than the deadline, so that the
    lock's own timeout answers first."""
    return longest if seconds is None else max(1, min(longest, math.ceil(seconds) - 1))


def timed_out(errno: int | None, message: str) -> bool:
    """Did the statement end at its deadline (the server's, or the driver's read timeout)?"""
    return errno == STATEMENT_TIMED_OUT or (errno in {2003, 2013} and "timed out" in message)


def lift(conn: Connection) -> None:
    """No deadline for what ``conn`` runs next: neither the server's nor the driver's (the
    connection must not go back to the pool afterwards: invalidate it)."""
    dbapi_conn: Any = conn.connection.dbapi_connection
    dbapi_conn._read_timeout = dbapi_conn._write_timeout = None  # PyMySQL sets them per read/write
    if "mariadb" in dbapi_conn.get_server_info().lower():
        _set_max_statement_time(dbapi_conn, 0)
