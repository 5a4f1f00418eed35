"""One database: its engine, its dialect's few differences, and error translation.

Every statement the queue runs goes through :meth:`Database.transaction`, which retries
deadlocks, lock-wait timeouts, Galera certification failures and SQLite's busy errors, retries a
lost connection once (or, when the url lists several Galera nodes, moves to the next node: see
``nodes.py``), and turns any other driver failure into :class:`UnavailableError` — driver errors
never leave the store. A statement the database refuses for good (over one of its limits, or
malformed) is not unavailability: retrying it cannot succeed, so it answers
:class:`TooLargeError` (a limit on a statement's size) or :class:`InternalError` (500), which no
client retries.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import pymysql  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ...errors import (
    AlreadyExistsError,
    ConfigError,
    InternalError,
    InvalidError,
    PerfectQueueError,
    TooLargeError,
    UnavailableError,
)
from . import postgres, wakeups
from .deadline import attach_mysql_deadline, lift, lock_wait, mysql_connect_args, timed_out
from .nodes import NODE_ERRNOS, Node, NodeSet, attach, split_hosts, sync_wait_of

log = logging.getLogger("perfectqueue.store")

T = TypeVar("T")
LockTimer = Callable[[float, float], None]  # seconds waiting for a named lock, seconds holding it

MYSQL_RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock (also Galera certification failure)
MAX_LOCK_RETRIES = 8
LOCK_WAIT_SECONDS = 10
DRIVER_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}  # no statement_timeout

MYSQL_TOO_LARGE = {
    1153: "packet larger than max_allowed_packet",
    1301: "result larger than max_allowed_packet",
    1390: "too many placeholders",
    1436: "thread stack overrun",
}
MYSQL_REFUSED = {1064, 1149, 1264, 1366, 1406}  # syntax errors; values out of range or too long
SQLITE_TOO_LARGE = (
    "Expression tree is too large",
    "too many SQL variables",
    "too many terms in compound SELECT",
    "string or blob too big",
    "parser stack overflow",
    "too many arguments on function",
)
SQLITE_REFUSED = ("syntax error",)


HELD = "perfectqueue_held_locks"  # in a connection's info, while a transaction runs


@dataclass
class HeldLocks:
    """The named locks one transaction holds, and how long it waited for them; released after
    it ends."""

    node: Node
    names: list[str] = field(default_factory=list)
    waited: float = 0.0
    since: float = 0.0  # when the first was taken


@dataclass(frozen=True)
class PoolOptions:
    """Connection pool sizing; every waiting long-poll holds none of these."""

    size: int = 10
    overflow: int = 10
    timeout: float = 10.0


def normalize_url(url: str) -> str:
    """The seed's ``mysql://`` (and the Ruby original's ``mysql2://``) mean PyMySQL here;
    ``postgresql://`` (or ``postgres://``) means psycopg 3."""
    as_postgres = postgres.normalize_url(url)
    if as_postgres is not None:
        return as_postgres
    for prefix in ("mysql2://", "mysql://"):
        if url.startswith(prefix):
            url = "mysql+pymysql://" + url[len(prefix) :]
    if url.startswith("mysql+pymysql://") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    if not (url.startswith("mysql+pymysql://") or url.startswith("sqlite://")):
        raise ConfigError(
            f"unsupported database url {redact(url)!r}: use mysql://, postgresql:// or sqlite://"
        )
    return url


def redact(url: str) -> str:
    """The url with its password hidden, for logs and errors."""
    try:
        hosts = [sa.engine.make_url(host) for host in split_hosts(url)]
    except (SQLAlchemyError, ValueError):
        return "<unparsable url>"
    if len(hosts) == 1:
        return hosts[0].render_as_string(hide_password=True)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url) if hosts[0].password else url


class Database:
    """An engine (one per node of a Galera url) plus what the queue needs to know of its dialect."""

    def __init__(
        self,
        url: str,
        pool: PoolOptions | None = None,
        isolation: str | None = None,
        statement_timeout: float | None = None,
    ):
        """``statement_timeout``: the most seconds one statement may take on MySQL and MariaDB
        (see ``deadline.py``) and on PostgreSQL (its own ``statement_timeout``); None: the
        driver's timeouts of 5 s to connect, 30 s to read (PostgreSQL: none)."""
        self.url = normalize_url(url)
        pool = pool or PoolOptions()
        self.statement_timeout = statement_timeout
        self.lock_wait = lock_wait(statement_timeout, LOCK_WAIT_SECONDS)
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgres = self.url.startswith(postgres.URL_PREFIX)
        self.is_mysql = not (self.is_sqlite or self.is_postgres)
        if self.is_sqlite:
            self.nodes = NodeSet([Node(0, self.url, _sqlite_engine(self.url, pool))])
        elif self.is_postgres:  # several hosts are libpq's own failover (see docs/ha.md)
            pg = postgres.create_engine(self.url, pool, statement_timeout, self.lock_wait)
            self.nodes = NodeSet([Node(0, self.url, pg)])
        else:
            plain, sync_wait = sync_wait_of(self.url)
            hosts = split_hosts(plain)
            engine = partial(_mysql_engine, pool=pool, isolation=isolation, deadline=statement_timeout)
            self.nodes = NodeSet([Node(i, u, engine(u)) for i, u in enumerate(hosts)])
            for node in self.nodes.nodes:
                attach(node.engine, node, self.nodes, sync_wait)
            self.nodes.watch(_quick_connect)
        self.reads_committed = self.is_postgres or (self.is_mysql and isolation in (None, "READ COMMITTED"))
        """Does each statement of a transaction see what committed before it (READ COMMITTED)?
        Fair acquisition's per-user locks need it (see ``userlocks.py``)."""
        self.retried: Counter[str] = Counter()  # conflicts, reconnects, node errors: for logs and tests
        self._skip_locked: bool | None = None
        self._warned_lock = False
        self._count_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine of the node in use (the only one unless the url lists several)."""
        return self.nodes.active().engine

    def check(self) -> None:
        """At start: a url listing several hosts names nodes of one Galera cluster (ConfigError)."""
        if self.nodes.several:
            self.nodes.check()

    def dispose(self) -> None:
        if self.retried or self.nodes.switches:
            log.warning(
                "database %s: retried %s; moved between nodes %d times",
                redact(self.url),
                ", ".join(f"{n} {what}" for what, n in sorted(self.retried.items())) or "nothing",
                self.nodes.switches,
            )
        self.nodes.close()

    def now(self) -> sa.ColumnElement[int]:
        """The database's clock in whole unix seconds, as an SQL expression."""
        if self.is_sqlite:
            return sa.cast(sa.func.strftime("%s", "now"), sa.Integer)
        if self.is_postgres:
            return postgres.now()
        return sa.func.unix_timestamp()

    def in_list(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        """``column IN :name``, the list bound at execution. On PostgreSQL ``column = ANY(:name)``
        with one array parameter: the statement's text does not change with the list's length,
        so neither SQLAlchemy nor psycopg renders and parses it again for each length (PostgreSQL
        still plans each execution for its values: see ``postgres.py``); elsewhere an expanding IN."""
        if self.is_postgres:
            return postgres.in_array(column, name)
        return column.in_(sa.bindparam(name, expanding=True))

    def clock_skew(self) -> float:
        """Seconds the database's clock is ahead of this host's (negative: behind), measured
        against the middle of the round trip; 0 on SQLite (the same clock)."""
        if self.is_sqlite:
            return 0.0
        query = postgres.precise_now() if self.is_postgres else sa.text("SELECT UNIX_TIMESTAMP(NOW(6))")
        before = time.time()
        value = self.transaction(lambda conn: float(conn.execute(query).scalar_one()), readonly=True)
        return value - (before + time.time()) / 2

    def supports_skip_locked(self) -> bool:
        """MariaDB 10.6+, MySQL 8+ and PostgreSQL have ``FOR UPDATE SKIP LOCKED``; SQLite needs none."""
        if self.is_postgres:
            return True
        if self._skip_locked is None:
            self._skip_locked = self.transaction(_has_skip_locked, readonly=True)
        return self._skip_locked

    def listen(self, tables: Iterable[str], heard: wakeups.Heard) -> wakeups.Listener | None:
        """A started listener for the wake-ups announced on ``tables`` (PostgreSQL's
        LISTEN/NOTIFY: see ``wakeups.py``); None where the database has none."""
        if not self.is_postgres:
            return None
        listener = wakeups.Listener(self.engine, tables, heard)
        listener.start()
        return listener

    @property
    def scans_heads_by_group(self) -> bool:
        """Does ``GROUP BY resource`` over the (resource, timeout) index read one entry per user
        (MySQL's loose index scan)? Elsewhere a recursive query steps from user to user."""
        return self.is_mysql

    @property
    def locks_in_unions(self) -> bool:
        """May a UNION's members have their own ORDER BY, LIMIT and FOR UPDATE (MySQL)? Elsewhere
        each member is a subquery (SQLite takes no ORDER BY there, PostgreSQL no FOR UPDATE)."""
        return self.is_mysql

    @contextmanager
    def connect(self, readonly: bool = False, lock: str | None = None) -> Iterator[Connection]:
        """A connection inside one transaction (SQLite: IMMEDIATE unless readonly).

        ``lock`` names a MySQL ``GET_LOCK`` (PostgreSQL: an advisory lock, see ``postgres.py``)
        taken as the transaction's first statement (it reads no table, so the transaction's reads
        all come after it). It, and every lock :meth:`try_locks` or :meth:`wait_lock` took in
        the transaction, is released after the transaction commits, so that whoever takes one
        next sees everything this one wrote.
        """
        with self._connect(self.nodes.active(), readonly, lock) as conn:
            yield conn

    @contextmanager
    def _connect(
        self, node: Node, readonly: bool, lock: str | None, timed: LockTimer | None = None
    ) -> Iterator[Connection]:
        with node.engine.connect() as raw:
            conn = raw.execution_options(sqlite_begin="DEFERRED") if readonly and self.is_sqlite else raw
            held = conn.info[HELD] = HeldLocks(node)
            try:
                with conn.begin():
                    if lock is not None:
                        self.wait_lock(conn, lock)
                    yield conn
            finally:
                # an invalidated connection (a lost server) is not touched again: that would
                # reconnect, and wait for a server that did not answer; its locks went with it
                if not conn.invalidated:
                    conn.info.pop(HELD, None)
                    if held.names and self.is_mysql:  # PostgreSQL's end with the transaction
                        _release_locks(conn, held.names)
                if held.names and timed is not None:
                    timed(held.waited, time.perf_counter() - held.since)

    def wait_lock(self, conn: Connection, name: str) -> None:
        """Take the named lock ``name`` in ``conn``'s transaction, waiting for it at most
        ``lock_wait`` seconds (UnavailableError after that), until the transaction ends."""
        self._lock(conn, [name], wait=True)

    def try_locks(self, conn: Connection, names: list[str]) -> list[bool]:
        """Take those of the named locks ``names`` nobody holds, at once, in one statement (as
        :meth:`wait_lock`, without waiting): for each name, whether it was taken."""
        return self._lock(conn, names, wait=False) if names else []

    def _lock(self, conn: Connection, names: list[str], wait: bool) -> list[bool]:
        held: HeldLocks = conn.info[HELD]
        self._warn_lock_on_galera(held.node)
        asked = time.perf_counter()
        if self.is_postgres:
            got = postgres.take_locks(conn, names, wait)
        else:
            got = _get_locks(conn, names, self.lock_wait if wait else 0)
        taken = time.perf_counter()
        held.waited += taken - asked
        if wait and not all(got):
            raise UnavailableError(f"could not take the lock {names[0]!r} within {self.lock_wait} s")
        if any(got) and not held.names:
            held.since = taken
        held.names += [name for name, ok in zip(names, got, strict=True) if ok]
        return got

    @contextmanager
    def unbounded(self) -> Iterator[Connection]:
        """A connection in a transaction without the statement deadline, for schema changes."""
        if self.statement_timeout is None or self.is_sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        if self.is_postgres:  # a setting of this transaction only
            with self.engine.begin() as conn:
                postgres.lift(conn)
                yield conn
            return
        with self.engine.connect() as conn:
            try:
                lift(conn)
                with conn.begin():
                    yield conn
            finally:
                conn.invalidate()  # its session has no deadline: not for the pool

    def transaction(
        self,
        work: Callable[[Connection], T],
        readonly: bool = False,
        lock: str | None = None,
        timed: LockTimer | None = None,
        *,
        repeat: Callable[[Connection], T] | None = None,
    ) -> T:
        """Run ``work`` in one transaction, retrying what is safe to retry.

        A duplicate primary key surfaces as AlreadyExistsError; other driver errors that are
        not retried become UnavailableError. With several nodes, a node error moves to the next
        node and tries again, up to twice round the list. ``timed``, with a ``lock``, is told
        of each time the lock was taken: the seconds spent waiting for it and holding it.

        A connection lost during the COMMIT leaves its outcome unknown: the transaction may have
        taken effect. Tried again, it runs ``repeat`` (default: ``work`` itself, which suits
        reads and writes whose second run ends in the same state or answers an idempotent error:
        a lease's calls, and acquisitions, whose lost leases expire).
        """
        lock_retries = 0
        node_retries = 0
        unknown = False  # an earlier try's COMMIT was cut off
        while True:
            node = self.nodes.active()
            committing = False
            try:
                with self._connect(node, readonly, lock, timed) as conn:
                    result = (repeat or work)(conn) if unknown else work(conn)
                    committing = True
                return result
            except DBAPIError as exc:
                if is_duplicate_key(exc):
                    raise AlreadyExistsError("a task with this id already exists") from exc
                refused = refusal(exc)
                if refused is not None:
                    raise refused from exc
                if self._is_lock_conflict(exc) and lock_retries < MAX_LOCK_RETRIES:
                    lock_retries += 1
                    self._count("conflicts")
                    time.sleep(random.uniform(0, 0.01 * 2**lock_retries))
                    continue
                late = timed_out(_mysql_errno(exc), str(exc.orig)) or postgres.timed_out(exc)
                if late and not self.nodes.several:
                    # the same server again would wait as long (with several nodes: the next one)
                    raise UnavailableError("the database did not answer in time", _describe(exc)) from exc
                cut_off = committing and exc.connection_invalidated and not readonly
                if self._node_error(node, exc, node_retries):
                    node_retries += 1
                    unknown = unknown or cut_off
                    continue
                raise UnavailableError("database error", _describe(exc)) from exc
            except SQLAlchemyError as exc:
                raise UnavailableError("database error", type(exc).__name__) from exc

    def init_lock(self) -> AbstractContextManager[None]:
        """Held while ``init`` changes the schema: PostgreSQL's concurrent DDL on one table may
        fail on a catalog's unique index; MariaDB's and SQLite's only needs the checks of
        ``schema.py`` (what another process added first is skipped)."""
        return postgres.init_lock(self.engine) if self.is_postgres else nullcontext()

    def _node_error(self, node: Node, exc: DBAPIError, retries: int) -> bool:
        """Should a failed transaction be tried again (on this node, or on the next)?"""
        if not self.nodes.several:
            if exc.connection_invalidated and retries == 0:
                self._count("reconnects")
                return True
            return False
        if not (exc.connection_invalidated or _mysql_errno(exc) in NODE_ERRNOS):
            return False
        if retries >= 2 * len(self.nodes.nodes):
            return False
        self._count("node errors")
        self.nodes.failed(node, _describe(exc))
        if retries >= len(self.nodes.nodes) - 1:
            time.sleep(0.2 * (retries + 2 - len(self.nodes.nodes)))  # all tried: give them time
        return True

    def _is_lock_conflict(self, exc: DBAPIError) -> bool:
        if self.is_sqlite:
            return "locked" in str(exc.orig) or "busy" in str(exc.orig)
        if self.is_postgres:
            return postgres.is_retryable(exc)
        return _mysql_errno(exc) in MYSQL_RETRYABLE

    def _count(self, what: str) -> None:
        with self._count_lock:
            self.retried[what] += 1

    def _warn_lock_on_galera(self, node: Node) -> None:
        if node.galera and not self._warned_lock:
            self._warned_lock = True
            log.warning(
                "%s is a Galera cluster and this queue keeps acquisitions apart with GET_LOCK, which "
                "is local to one node: fair scheduling, max_running and acquire_lock: get_lock are exact "
                "only while every service replica (and every Ruby PerfectQueue process) writes through "
                "the same node (give every replica the same node list, in the same order)",
                redact(self.url),
            )


def _has_skip_locked(conn: Connection) -> bool:
    return server_at_least(conn, mariadb=(10, 6), mysql=(8, 0))


def server_at_least(conn: Connection, *, mariadb: tuple[int, ...], mysql: tuple[int, ...]) -> bool:
    """Is the server at least this version of MariaDB, or of MySQL?"""
    info = tuple(conn.dialect.server_version_info or ())
    return info >= (mariadb if getattr(conn.dialect, "is_mariadb", False) else mysql)


def is_duplicate_key(exc: DBAPIError) -> bool:
    """Did an INSERT meet an existing primary key?"""
    return (
        _mysql_errno(exc) == 1062
        or "UNIQUE constraint failed" in str(exc.orig)
        or postgres.is_duplicate_key(exc)
    )


def refusal(exc: DBAPIError) -> PerfectQueueError | None:
    """The error to answer when the database refused a statement for good (one over its limits,
    or one it cannot parse), which no retry can change; None for any other failure (those are
    unavailability: a lost connection, a lock, a missing table that ``init`` may yet create)."""
    errno, message = _mysql_errno(exc), str(exc.orig)
    if postgres.is_nul_text(exc):
        return InvalidError("PostgreSQL text cannot hold the NUL character: no task has it")
    if errno is not None:
        too_large, refused = MYSQL_TOO_LARGE.get(errno), errno in MYSQL_REFUSED
    elif postgres.is_own_error(exc):
        too_large = message.splitlines()[0] if postgres.is_too_large(exc) else None
        refused = postgres.is_refused(exc)
    else:
        too_large = next((limit for limit in SQLITE_TOO_LARGE if limit in message), None)
        refused = any(what in message for what in SQLITE_REFUSED)
    if too_large is None and not refused:
        return None
    log.warning("the database refused a statement for good: %s", _describe(exc))
    if too_large is not None:
        return TooLargeError(f"the database refused the statement as too large ({too_large}): send less")
    return InternalError("the database refused a statement of this request (the service's log says why)")


def is_missing_table(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, UnavailableError) else exc
    if not isinstance(cause, DBAPIError):
        return False
    errno, message = _mysql_errno(cause), str(cause.orig)
    return errno == 1146 or "no such table" in message or postgres.is_missing_table(cause)


def _get_locks(conn: Connection, names: list[str], wait: int) -> list[bool]:
    """``GET_LOCK`` of each name in one statement (MariaDB and MySQL 5.7+ hold several per session)."""
    got = conn.execute(sa.select(*(sa.func.get_lock(name, wait) for name in names))).one()
    return [value == 1 for value in got]


def _release_locks(conn: Connection, names: list[str]) -> None:
    """Through the driver's own cursor: a statement through ``conn`` would open a transaction
    that would take one more round trip to end."""
    try:
        cursor = conn.connection.cursor()
        try:
            cursor.execute("SELECT " + ", ".join(["RELEASE_LOCK(%s)"] * len(names)), names)
            cursor.fetchall()
        finally:
            cursor.close()
    except (SQLAlchemyError, conn.dialect.loaded_dbapi.Error):
        conn.invalidate()  # the server drops a session's locks with the session


def _mysql_errno(exc: DBAPIError) -> int | None:
    args: Any = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _describe(exc: DBAPIError) -> str:
    errno = _mysql_errno(exc)
    first = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
    return f"{errno} {first}" if errno is not None and not first.startswith("(") else first


def _sqlite_engine(url: str, pool: PoolOptions) -> Engine:
    engine = sa.create_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_timeout=pool.timeout,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class _PyMySQLConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, but for one thing: with no TLS options given, PyMySQL tries TLS if
    the server offers it ("preferred", unverified) with a context it builds anew for every
    connection, and building one loads the system's CA certificates (about 25 ms of CPU, the
    interpreter lock held: every request of the replica waits). That context verifies nothing
    and holds no files of the user's, so one per process serves every connection. Explicit TLS
    options are left to PyMySQL, which reads their files at each connection."""

    _preferred: ssl.SSLContext | None = None
    _preferred_lock = threading.Lock()

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if sslp != {}:
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        with self._preferred_lock:
            if _PyMySQLConnection._preferred is None:
                _PyMySQLConnection._preferred = super()._create_ssl_ctx(sslp)
            return _PyMySQLConnection._preferred


def _quick_connect(node: Node, seconds: float) -> Any:
    """A driver connection to ``node`` outside its pool, every timeout ``seconds``."""
    args, kwargs = node.engine.dialect.create_connect_args(node.engine.url)
    timeouts = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    return _PyMySQLConnection(*args, **{**kwargs, **timeouts})


def _mysql_engine(url: str, pool: PoolOptions, isolation: str | None, deadline: float | None) -> Engine:
    engine = sa.create_engine(
        url,
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_timeout=pool.timeout,
        pool_recycle=3600,  # no pre-ping: a lost connection is retried once (the pool is invalidated)
        # Every use ends its transaction itself (commit, rollback, or the rollback of Connection.close),
        # so the pool's own ROLLBACK at check-in would be one more round trip per call for nothing.
        pool_reset_on_return=None,
        isolation_level=isolation or "READ COMMITTED",
        connect_args=DRIVER_TIMEOUTS if deadline is None else mysql_connect_args(deadline),
    )
    if deadline is not None:
        attach_mysql_deadline(engine, deadline)

    @sa.event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return _PyMySQLConnection(*cargs, **cparams)

    return engine
