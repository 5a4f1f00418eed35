"""PostgreSQL's part of the store (psycopg 3): its engine, its clock, its lock, what its errors mean.

The rest of the store speaks SQLAlchemy Core; what PostgreSQL does differently from MariaDB and
SQLite is answered here, one function per difference, and :class:`.database.Database` asks.

- The clock is ``statement_timestamp()`` in whole seconds (floored, as ``UNIX_TIMESTAMP()`` is):
  the statement's own start, not the transaction's (``now()``), so a transaction that waited
  for a lock leases from the time it got it.
- Named locks (the table's: ``fair_lock: table``, ``acquire_lock: get_lock``; a user's: fair
  acquisition's per-user locks) are transaction-level advisory locks,
  ``pg_advisory_xact_lock(key)`` (``pg_try_advisory_xact_lock(key)`` not to wait), released by
  the transaction's commit or rollback; the key is a stable 64-bit hash of the lock's name. A
  session waits at most ``lock_timeout`` for one, or for a row lock: 10 s, or less than the
  statement deadline (``statement_timeout``), so that the lock's own timeout answers first.
- Every execution is planned for its own values (``plan_cache_mode = force_custom_plan``):
  psycopg prepares a statement run often, and a generic plan made while a table was small kept
  a sequential scan as it grew (a submit-batch's look-up of present ids slowed fourfold in the
  benchmark after a truncate).
- A server that does not answer at all is bounded on the client's side: ``watchdog.py``.
- Errors are told by their SQLSTATE: serialization failures and deadlocks are retried; a
  statement or lock timeout answers 503 at once (waiting again would take as long); the classes
  of data exceptions and program limits are refusals no retry can change.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from . import watchdog
from .deadline import CLIENT_MARGIN

RETRYABLE = {"40001", "40P01"}  # serialization failure, deadlock detected
TIMED_OUT = {"57014", "55P03"}  # statement_timeout, lock_timeout: waiting again would take as long
DUPLICATE_KEY = "23505"
MISSING_TABLE = "42P01"
TOO_LARGE_CLASS = "54"  # program limit exceeded: statement too complex, too many arguments, …
REFUSED = {"42601", "42804", "42883"}  # syntax error, datatype mismatch, undefined function
REFUSED_CLASS = "22"  # data exception: a value out of range, too long, or not valid text
INIT_LOCK = "perfectqueue init"
PREFIXES = ("postgresql+psycopg://", "postgresql://", "postgres://")
URL_PREFIX = "postgresql+psycopg://"


class PoolSizes(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def overflow(self) -> int: ...
    @property
    def timeout(self) -> float: ...


def normalize_url(url: str) -> str | None:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 here; None for another database's url."""
    for prefix in PREFIXES:
        if url.startswith(prefix):
            return URL_PREFIX + url[len(prefix) :]
    return None


def create_engine(url: str, pool: PoolSizes, deadline: float | None, lock_wait: int) -> Engine:
    """``deadline``: PostgreSQL's ``statement_timeout`` (a statement running longer is cancelled,
    SQLSTATE 57014: answered 503, not retried), and the client's own bound for a server that does
    not answer at all (``watchdog.py``: a second later, the connection is cut; and the connect
    timeout); ``lock_wait``: its ``lock_timeout``, in seconds."""
    # Every execution planned for its own values: psycopg prepares a statement run often, and a
    # generic plan made while the table was small (a new or truncated table; autovacuum's ANALYZE
    # not yet run) kept a sequential scan, with the id array checked row by row, as it grew.
    options = f"-c lock_timeout={lock_wait * 1000} -c plan_cache_mode=force_custom_plan"
    connect: dict[str, Any] = {"connect_timeout": 5, **watchdog.KEEPALIVES}
    if deadline is not None:
        options += f" -c statement_timeout={math.ceil(deadline * 1000)}"
        client = deadline + CLIENT_MARGIN
        connect.update(connect_timeout=max(2, math.ceil(client)), tcp_user_timeout=math.ceil(client * 1000))
    engine = sa.create_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_timeout=pool.timeout,
        pool_recycle=3600,
        pool_reset_on_return=None,  # every use ends its transaction itself, as on MariaDB
        isolation_level="READ COMMITTED",
        connect_args={**connect, "options": options},
    )
    if deadline is not None:
        watchdog.WATCHDOG.attach(engine, deadline)
    return engine


def lift(conn: Connection) -> None:
    """No statement deadline for the rest of ``conn``'s transaction (schema changes: an index
    built on a large table takes minutes)."""
    watchdog.lift(conn)
    conn.execute(sa.text("SET LOCAL statement_timeout = 0"))


def now() -> sa.ColumnElement[int]:
    """The database's clock in whole unix seconds."""
    epoch = sa.extract("epoch", sa.func.statement_timestamp())
    return sa.cast(sa.func.floor(epoch), sa.Integer)


def precise_now() -> sa.TextClause:
    """The database's clock to the microsecond, in unix seconds (the clock now, not the statement's)."""
    return sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")


def lock_key(name: str) -> int:
    """The advisory lock key of a name: a signed 64-bit hash, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def take_locks(conn: Connection, names: list[str], wait: bool) -> list[bool]:
    """The named locks until the transaction ends, in one statement: waiting for each at most
    ``lock_timeout`` (all taken), or only those free (whether each was taken)."""
    if wait:
        conn.execute(sa.select(*(sa.func.pg_advisory_xact_lock(lock_key(name)) for name in names)))
        return [True] * len(names)
    tried = (sa.func.pg_try_advisory_xact_lock(lock_key(name)) for name in names)
    return [bool(value) for value in conn.execute(sa.select(*tried)).one()]


@contextmanager
def init_lock(engine: Engine) -> Iterator[None]:
    """One ``init`` at a time on this database: PostgreSQL's DDL may fail on a catalog's unique
    index when two sessions create the same table, column or index at once."""
    with engine.connect() as conn:
        conn.execute(sa.text("SET lock_timeout = 0"))
        conn.execute(sa.select(sa.func.pg_advisory_lock(lock_key(INIT_LOCK))))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(lock_key(INIT_LOCK))))
            conn.execute(sa.text("RESET lock_timeout"))
            conn.commit()


def is_own_error(exc: DBAPIError) -> bool:
    """Did psycopg raise it?"""
    return type(exc.orig).__module__.startswith("psycopg")


def sqlstate(exc: DBAPIError) -> str | None:
    state: Any = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_retryable(exc: DBAPIError) -> bool:
    return sqlstate(exc) in RETRYABLE


def timed_out(exc: DBAPIError) -> bool:
    return sqlstate(exc) in TIMED_OUT or watchdog.passed_deadline(exc)


def is_duplicate_key(exc: DBAPIError) -> bool:
    return sqlstate(exc) == DUPLICATE_KEY


def is_missing_table(exc: DBAPIError) -> bool:
    return sqlstate(exc) == MISSING_TABLE


def is_too_large(exc: DBAPIError) -> bool:
    state = sqlstate(exc)
    return state is not None and state.startswith(TOO_LARGE_CLASS)


def is_refused(exc: DBAPIError) -> bool:
    """Refused for good."""
    state = sqlstate(exc)
    return state is not None and (state in REFUSED or state.startswith(REFUSED_CLASS))


def is_nul_text(exc: DBAPIError) -> bool:
    """psycopg refused to send text with a NUL character, which PostgreSQL's text cannot hold
    (so no row has it: the request names what cannot exist)."""
    return is_own_error(exc) and sqlstate(exc) is None and "NUL" in str(exc.orig)


def in_array(column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """``column = ANY(:name)``, ``:name`` one array of the column's type."""
    return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
