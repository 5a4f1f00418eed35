"""Wake-ups across service replicas: PostgreSQL's LISTEN/NOTIFY.

A replica that made a task waiting (a submit, a release, a retry without a wait, …) sends
``pg_notify('perfectqueue_<table>', <origin>)``. A submit sends it from its own statement (its
INSERT returns it, or the look-up of the ids present before a multi-row INSERT selects it), and
so does a finish under fair scheduling (its UPDATE returns it: a slot of its user's
``max_running`` is free); the others send it in a transaction of their own after theirs. Every
replica keeps one connection per database that LISTENs on the channels of its queues
(:class:`Listener`, a thread of its own, not one connection per waiting poll) and wakes that
queue's long-polls. The origin lets a replica ignore its own announcements (it woke its polls
already). A notification is a hint, never the only way
to learn of work: while the listening connection is down the periodic probe still finds it, and
after each (re)connection every queue is woken once, for what was missed meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .names import fitted

log = logging.getLogger("perfectqueue.store")

CHANNEL_PREFIX = "perfectqueue_"
RECONNECT_WAIT = (0.2, 5.0)  # the first and the longest wait before connecting again
Heard = Callable[[str, str | None], None]
"""(table, origin): a notification on a table's channel; the origin None after a (re)connection
(anything may have been missed)."""


def channel(table: str) -> str:
    """The table's notification channel (an identifier: at most 63 bytes, a hash past that)."""
    return fitted(CHANNEL_PREFIX, table, "", 63)


def notify(table: str, origin: str) -> sa.ColumnElement[Any]:
    """The expression that notifies the table's channel, when its transaction commits (one
    notification however many times a transaction sends it: PostgreSQL drops repeats)."""
    return sa.func.pg_notify(channel(table), origin)


def announce(conn: Connection, table: str, origin: str) -> None:
    conn.execute(sa.select(notify(table, origin)))


class Listener:
    """One LISTENing connection, out of the engine's pool, in a thread of its own."""

    def __init__(self, engine: Engine, tables: Iterable[str], heard: Heard, interval: float = 0.5):
        self.engine, self.heard, self.interval = engine, heard, interval
        self.tables = {channel(table): table for table in tables}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="perfectqueue-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 2)

    def _run(self) -> None:
        wait = RECONNECT_WAIT[0]
        while not self._stop.is_set():
            try:
                self._listen()
                wait = RECONNECT_WAIT[0]
            except Exception as exc:  # a lost or refused connection: the probe covers meanwhile
                log.warning("listening for wake-ups failed (again in %.1f s): %s", wait, exc)
                self._stop.wait(wait)
                wait = min(wait * 2, RECONNECT_WAIT[1])

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        driver: Any = raw.driver_connection
        raw.detach()  # this connection is the listener's for good: never back in the pool
        try:
            driver.rollback()  # autocommit can only be set outside a transaction
            driver.autocommit = True
            for name in self.tables:
                driver.execute(f'LISTEN "{name}"')  # no quote in a table name
            for table in self.tables.values():
                self.heard(table, None)
            while not self._stop.is_set():
                for note in driver.notifies(timeout=self.interval):
                    if note.channel in self.tables:
                        self.heard(self.tables[note.channel], note.payload)
        finally:
            driver.close()
