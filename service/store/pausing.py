"""Paused queues: a side table naming the queue tables whose acquisitions hand out nothing.

One row per paused table (``perfectqueue_paused``: the table's name and when it was paused) in
the queue's database, so every service replica and every process of the direct backend sees a
pause. Submits, heartbeats, finishes and the operator's calls go on as ever; only acquisitions
(polls) answer empty, and tasks already leased keep running. ``init`` creates the side table
beside the queue's, and a pause or a resume creates it if an older ``init`` did not, the way
``init`` does (under its lock: PostgreSQL's concurrent DDL would fail). Ruby PerfectQueue
processes sharing the table do not read it: they keep acquiring.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ...errors import PerfectQueueError, UnavailableError
from .database import Database

PAUSED_TABLE = "perfectqueue_paused"
PAUSE_RECHECK = 1.0
"""Seconds a process trusts what it last read (a pause reaches every replica within it)."""

PAUSED = sa.Table(
    PAUSED_TABLE,
    sa.MetaData(),
    sa.Column("queue", sa.String(64), primary_key=True),
    sa.Column("paused_at", sa.Integer, nullable=False),
    mysql_charset="utf8mb4",
)


def create(conn: Connection) -> None:
    """Create the side table if it is missing."""
    conn.execute(sa.schema.CreateTable(PAUSED, if_not_exists=True))


def ensure(db: Database) -> None:
    """Create the side table if it is missing, under ``init``'s lock, as ``init`` does."""
    with db.engine.connect() as conn:
        if sa.inspect(conn).has_table(PAUSED_TABLE):
            return
    with db.init_lock(), db.engine.begin() as conn:
        create(conn)


def pause(conn: Connection, table: str, now: int) -> None:
    """Pause ``table`` (a paused one keeps the time it was first paused)."""
    row = {"queue": table, "paused_at": now}
    if conn.dialect.name in ("sqlite", "postgresql"):
        lite = (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(PAUSED)
        conn.execute(lite.values(row).on_conflict_do_nothing(index_elements=[PAUSED.c.queue]))
    else:
        conn.execute(mysql.insert(PAUSED).values(row).prefix_with("IGNORE"))


def resume(conn: Connection, table: str) -> None:
    """Resume ``table`` (one not paused stays so)."""
    conn.execute(sa.delete(PAUSED).where(PAUSED.c.queue == table))


def paused_at(conn: Connection, table: str) -> int | None:
    """When ``table`` was paused (None: it is not)."""
    found = conn.execute(sa.select(PAUSED.c.paused_at).where(PAUSED.c.queue == table)).scalar()
    return None if found is None else int(found)


class PauseFlag:
    """One queue table's pause, as this process reads it: cached for PAUSE_RECHECK seconds, so
    that acquisitions read it about once a second, not once each."""

    def __init__(self, db: Database, table: str) -> None:
        self.db, self.table = db, table
        self._read_at = -PAUSE_RECHECK
        self._paused_at: int | None = None
        self._ensured = False

    def paused_at(self) -> int | None:
        """When the queue was paused (None: it is not). A side table that cannot be read (an
        ``init`` older than pausing, the database out of reach) reads as not paused: the
        acquisition that asks then answers for itself."""
        if time.monotonic() - self._read_at >= PAUSE_RECHECK:
            try:
                found = self.db.transaction(lambda conn: paused_at(conn, self.table), readonly=True)
            except PerfectQueueError:
                found = None
            self._paused_at, self._read_at = found, time.monotonic()
        return self._paused_at

    def set(self, paused: bool) -> int | None:
        """Pause or resume the queue; when it was paused (None: resumed)."""
        if not self._ensured:
            try:
                ensure(self.db)
            except DBAPIError as exc:
                raise UnavailableError(f"cannot create the table {PAUSED_TABLE}: {exc.orig}") from exc
            self._ensured = True

        def work(conn: Connection) -> int | None:
            if paused:
                pause(conn, self.table, int(conn.execute(sa.select(self.db.now())).scalar_one()))
            else:
                resume(conn, self.table)
            return paused_at(conn, self.table)

        self._paused_at, self._read_at = self.db.transaction(work), time.monotonic()
        return self._paused_at
