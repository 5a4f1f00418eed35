"""Listing a queue's tasks a page at a time, on an index, reading a bounded number of rows a page.

Two orders. ``id`` (the original listing's): the primary key, an id prefix a range of it; a
status is the range of the timeout index that holds it (waiting: ``EVENT_HORIZON < timeout <=
now``; running: ``timeout > now``; every way a row ends: ``timeout <= EVENT_HORIZON``) added to
the statement, as is a user; the database reads as far as it must to fill the page. ``due``: the
timeout index's (timeout, id) order, where a status is one range, and with a user the
(resource, timeout, id) index's; InnoDB secondary indexes end with the primary key, so both are
index orders and a page's reads stay bounded however rare the matches. In both, the filters no
index holds (the type, inside the data; the exact status within a range; whether a lease is held;
an id prefix in due order) are applied to at most ``SCAN_BATCHES * limit`` rows a page: a page may
be short and still carry a cursor (ask for the next one).

A cursor is the last row's id (id order: the same as the original listing's) or
``<timeout>:<id>`` (timeout order), the timeout in ASCII digits within the column's range; any
other cursor is refused (InvalidError) before a statement is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ...errors import InvalidError
from .model import EVENT_HORIZON, MAX_TIMESTAMP, TaskStatus

SCAN_BATCHES = 10
ORDERS = ("id", "due")
Position = str | tuple[int, str]
TIMEOUT = re.compile("[0-9]{1,10}")  # not \d nor isdigit(): int() fails on "²"
FOREIGN = "cursor is not one this listing's filters returned"


class Listing:
    """Keyset pages of one table's rows; ``columns`` are what each row reads."""

    def __init__(self, table: sa.Table, columns: Callable[[], list[sa.ColumnElement[Any]]]) -> None:
        self.table, self.columns, self.t = table, columns, table.c

    def page(
        self,
        conn: Connection,
        now: int,
        *,
        order: str,
        status: TaskStatus | None,
        user: str | None,
        prefix: str | None,
        cursor: str | None,
        limit: int,
        keep: Callable[[Row[Any]], bool],
    ) -> tuple[list[Row[Any]], str | None]:
        """Up to ``limit`` rows that ``keep`` accepts after ``cursor``, and the next cursor."""
        if order not in ORDERS:
            raise InvalidError(f"order must be one of {', '.join(ORDERS)}")
        by_id = order == "id"
        position = decode_cursor(cursor, by_id)
        found: list[Row[Any]] = []
        for _ in range(SCAN_BATCHES):
            rows = (
                self._by_id(conn, position, prefix, _where(self.t, status, now, user), limit)
                if by_id
                else (self._by_timeout(conn, position, status=status, now=now, user=user, limit=limit))
            )
            for row in rows:
                if by_id and prefix and not row.id.startswith(prefix):
                    return found, None  # past the prefix's range of ids
                position = row.id if by_id else (row.timeout, row.id)
                if keep(row) and not (prefix and not row.id.startswith(prefix)):
                    found.append(row)
                    if len(found) == limit:
                        return found, encode_cursor(position)
            if len(rows) < limit:
                return found, None
        return found, None if position is None else encode_cursor(position)

    def _by_id(
        self, conn: Connection, after: Any, prefix: str | None, where: Sequence[Any], limit: int
    ) -> Sequence[Row[Any]]:
        query = sa.select(*self.columns()).where(*where).order_by(self.t.id).limit(limit)
        if after is not None:
            query = query.where(self.t.id > after)
        if prefix:
            query = query.where(self.t.id >= prefix)
        return conn.execute(query).all()

    def _by_timeout(
        self,
        conn: Connection,
        after: Any,
        *,
        status: TaskStatus | None,
        now: int,
        user: str | None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """A batch in (timeout, id) order: the rest of the cursor's second, then later seconds
        (two plain ranges rather than a row comparison, so that every database uses the index)."""
        low, high = _bounds(status, now)
        where: list[sa.ColumnElement[bool]] = [] if user is None else [self.t.resource == user]
        if high is not None:
            where.append(self.t.timeout <= high)
        rows: list[Row[Any]] = []
        if after is not None:
            same = sa.select(*self.columns()).where(*where, self.t.timeout == after[0], self.t.id > after[1])
            rows += conn.execute(same.order_by(self.t.id).limit(limit)).all()
            low = after[0] if low is None else max(low, after[0])
        if len(rows) < limit:
            later = sa.select(*self.columns()).where(*where)
            if low is not None:
                later = later.where(self.t.timeout > low)
            rows += conn.execute(later.order_by(self.t.timeout, self.t.id).limit(limit - len(rows))).all()
        return rows


def _where(t: Any, status: TaskStatus | None, now: int, user: str | None) -> list[sa.ColumnElement[bool]]:
    """A status's timeout range and a user, as conditions of an id-order statement."""
    low, high = _bounds(status, now)
    where = [] if user is None else [t.resource == user]
    if low is not None:
        where.append(t.timeout > low)
    if high is not None:
        where.append(t.timeout <= high)
    return where


def _bounds(status: TaskStatus | None, now: int) -> tuple[int | None, int | None]:
    """The timeout range (low exclusive, high inclusive) that holds a status's rows."""
    if status is TaskStatus.WAITING:
        return EVENT_HORIZON, now
    if status is TaskStatus.RUNNING:
        return now, None
    if status is None:
        return None, None
    return None, EVENT_HORIZON  # finished, dead, cancelled


def encode_cursor(position: Position) -> str:
    return position if isinstance(position, str) else f"{position[0]}:{position[1]}"


def decode_cursor(cursor: str | None, by_id: bool) -> Any:
    """The position a cursor names: an id (id order) or (timeout, id); InvalidError if foreign."""
    if cursor is None:
        return None
    if by_id:
        return cursor  # any id the table may hold (the original's may hold control characters)
    timeout, sep, task_id = cursor.partition(":")
    if not sep or not task_id or not TIMEOUT.fullmatch(timeout) or int(timeout) > MAX_TIMESTAMP:
        raise InvalidError(FOREIGN)
    return (int(timeout), task_id)
