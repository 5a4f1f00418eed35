"""The per-minute counts side table: tasks submitted and finished per queue and minute.

The queue's table cannot tell throughput (a finished row forgets when it was submitted and is
deleted after its retention), so the service adds what it counted into a side table of the
queue's database, one row per (queue table, minute), with an upsert that adds to the counts:
any number of replicas sum up. Rows older than ``KEEP`` seconds are deleted as counts are added.
``init`` creates the table beside the queue's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

STATS_TABLE = "perfectqueue_stats"
KEEP = 2 * 3600
"""Seconds of per-minute counts kept."""

MinuteCounts = Mapping[int, tuple[int, int]]
"""Minute (unix seconds, a multiple of 60) -> (submitted, finished)."""


def stats_table() -> sa.Table:
    return sa.Table(
        STATS_TABLE,
        sa.MetaData(),
        sa.Column("queue", sa.String(64), primary_key=True),
        sa.Column("minute", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("submitted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("finished", sa.BigInteger, nullable=False, server_default="0"),
        mysql_charset="utf8mb4",
    )


STATS = stats_table()


def create(conn: Connection) -> None:
    """Create the side table if it is missing."""
    conn.execute(sa.schema.CreateTable(STATS, if_not_exists=True))


def add(conn: Connection, queue: str, counts: MinuteCounts) -> None:
    """Add ``counts`` to the queue's rows, and delete its rows older than KEEP."""
    c = STATS.c
    rows = [
        {"queue": queue, "minute": m, "submitted": s, "finished": f} for m, (s, f) in sorted(counts.items())
    ]
    if rows:
        conn.execute(_upsert(conn), rows)
    conn.execute(sa.delete(STATS).where(c.queue == queue, c.minute < int(time.time()) - KEEP))


def read(conn: Connection, queue: str, start: int, end: int) -> dict[int, tuple[int, int]]:
    """The queue's counts of the minutes from ``start`` to ``end`` (inclusive)."""
    c = STATS.c
    query = sa.select(c.minute, c.submitted, c.finished).where(
        c.queue == queue, c.minute >= start, c.minute <= end
    )
    return {int(m): (int(s), int(f)) for m, s, f in conn.execute(query)}


def _upsert(conn: Connection) -> Any:
    c = STATS.c
    if conn.dialect.name in ("sqlite", "postgresql"):
        lite = (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(STATS)
        return lite.on_conflict_do_update(
            index_elements=[c.queue, c.minute],
            set_={
                "submitted": c.submitted + lite.excluded.submitted,
                "finished": c.finished + lite.excluded.finished,
            },
        )
    my = mysql.insert(STATS)
    return my.on_duplicate_key_update(
        submitted=c.submitted + my.inserted.submitted, finished=c.finished + my.inserted.finished
    )
