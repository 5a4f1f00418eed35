"""Fair acquisition's locks: one per user served, or the table's.

``max_running`` is exact only if no two acquisitions count a user's running tasks and lease its
tasks at once. The original keeps them apart with one lock for the table, ``GET_LOCK('<table>')``,
held from its count to its commit: every acquisition waits for every other, and that is the
default here too. With ``fair_lock: user``, where no Ruby process shares the table, an
acquisition instead:

1. plans from the running counts and the users' heads, without any lock (READ COMMITTED);
2. takes the named lock of each user it planned, all in one statement and without waiting
   (MySQL ``GET_LOCK(name, 0)``, PostgreSQL ``pg_try_advisory_xact_lock``); a user whose lock
   another acquisition holds is being served by it right now, so it plans again without that
   user. Only when every user it could serve is busy does it wait, for the first of them,
   holding no other lock (so no two acquisitions can wait for each other), and then tries the
   others again;
3. counts the running tasks of the users it locked again: that statement starts after the lock
   was taken, so it sees every lease an earlier holder committed (the lock is let go only after
   the holder's commit);
4. reads their planned rows (``FOR UPDATE SKIP LOCKED``), leases them, commits and lets go.

Tasks without a user are never limited and take no lock: their rows' ``SKIP LOCKED`` keeps two
acquisitions off the same row. Acquisitions serving different users run in parallel.

The table's lock stays where it is required, whatever ``fair_lock`` says: with ``acquire_lock:
get_lock``, and for a table the original may be using (its processes take only the table's lock
and count running rows themselves): one of the original's shape
(``init`` has not added this project's columns) or whose users are not compared byte for byte as
in the tables this project creates (the original's collation; on MariaDB/MySQL it compares
without case, where two spellings of one user would get two locks). A server without ``SKIP
LOCKED``, or MySQL at ``REPEATABLE READ`` (whose snapshot would predate the lock), keeps it too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import fair
from .database import Database

COLUMNS = sa.table(
    "columns",
    *(sa.column(name) for name in ("table_schema", "table_name", "column_name", "collation_name")),
    schema="information_schema",
)
RECHECK = 5.0
"""Seconds between looks at whether a table whose users compared without case now compares bytes."""


class UserLocks:
    """Which lock one table's fair acquisitions take, and the per-user locks themselves."""

    def __init__(self, db: Database, table: sa.Table, mode: str, extended: Callable[[], bool]) -> None:
        self.db, self.table, self.mode, self.extended = db, table, mode, extended
        self._t = table.c
        self._bytewise = False
        self._checked_at = -RECHECK

    def apply(self) -> bool:
        """Do fair acquisitions lock the users they serve rather than the table?"""
        if self.mode != "user" or not self.db.reads_committed or not self.db.supports_skip_locked():
            return False
        return self.extended() and self._compares_bytes()

    def plan(
        self,
        conn: Connection,
        now: int,
        slots: int,
        heads: list[fair.Head],
        *,
        running: dict[str, int],
        available: dict[str | None, int],
        locked: set[str],
    ) -> dict[str | None, int]:
        """``fair.plan`` of ``slots`` tasks, every user it plans locked (steps 2 and 3 above):
        ``locked`` gains the users locked now, ``running`` their counts taken under their
        locks, ``available`` a 0 for each user busy elsewhere."""
        busy: list[str] = []
        while True:
            counts = fair.plan(heads, running, slots, available)
            wanted = [user for user in counts if user is not None and user not in locked]
            if wanted:
                got = self.db.try_locks(conn, [self.name(user) for user in wanted])
                busy += [user for user, ok in zip(wanted, got, strict=True) if not ok]
                available.update(dict.fromkeys(busy, 0))
                wanted = [user for user, ok in zip(wanted, got, strict=True) if ok]
            elif busy and not counts and not locked:  # all served elsewhere: wait for one, holding none
                for user in busy:  # once it is let go, the others are worth trying again
                    del available[user]
                wanted, busy = busy[:1], []
                self.db.wait_lock(conn, self.name(wanted[0]))
            else:
                return counts
            locked.update(wanted)
            fresh = self._running(conn, now, wanted)
            running.update({user: fresh.get(_key(user), 0) for user in wanted})

    def name(self, user: str) -> str:
        """The named lock of one user of this table (MySQL's names are at most 64 characters).
        Trailing spaces are left out: a PAD SPACE collation compares ``a`` and ``a `` equal."""
        digest = hashlib.blake2b(f"{self.table.name}\0{_key(user)}".encode(), digest_size=20).hexdigest()
        return f"{self.table.name[:20]}/{digest}"

    def _running(self, conn: Connection, now: int, users: list[str]) -> dict[str, int]:
        """The running count of each of ``users``, as the plan counts it."""
        if not users:
            return {}
        query = (
            sa.select(self._t.resource, sa.func.count())
            .where(self._t.resource.in_(users), self._t.timeout > now, self._t.created_at.is_not(None))
            .group_by(self._t.resource)
        )
        counts: dict[str, int] = {}
        for user, count in conn.execute(query).all():
            counts[_key(user)] = counts.get(_key(user), 0) + count
        return counts

    def _compares_bytes(self) -> bool:
        """Does the table's user column compare byte for byte, as in the tables this project
        creates (MariaDB/MySQL: a ``_bin`` collation, also what ``init --binary-collation``
        converts a table to; PostgreSQL: ``C``)? A table the original created does not. Known
        once seen; looked at again every RECHECK seconds until then."""
        if self._bytewise or time.monotonic() - self._checked_at < RECHECK:
            return self._bytewise
        self._checked_at = time.monotonic()
        c = COLUMNS.c
        schema = sa.func.current_schema() if self.db.is_postgres else sa.func.database()
        query = sa.select(c.collation_name).where(
            c.table_schema == schema, c.table_name == self.table.name, c.column_name == "resource"
        )
        collation = str(self.db.transaction(lambda conn: conn.execute(query).scalar(), readonly=True))
        self._bytewise = collation.endswith("_bin") or collation in {"C", "POSIX"}
        return self._bytewise


def _key(user: str) -> str:
    return user.rstrip(" ")
