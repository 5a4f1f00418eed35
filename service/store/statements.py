"""The statements the writing operations share: which rows a lease holds, a row's lease state,
and how a row ends (finished, dead or cancelled; CONTRACT.md §2's finished range).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ...errors import PerfectQueueError
from .model import DELETE_OFFSET, Outcome
from .owners import SLOT, held_by, stamped_by_lease
from .reading import QueueReader
from .rows import holds, lease_error


class QueueStatements(QueueReader):
    """The statements shared by the operations that change rows (``QueueStore`` sets
    ``retention_time`` and ``policy``, declared by :class:`QueueReader`)."""

    def _held(self, task_id: str, lease: int) -> sa.ColumnElement[bool]:
        held = held_by(self._t.owner, self._t.timeout, lease)
        return sa.and_(self._t.id == task_id, held, self._t.created_at.is_not(None))

    def _update_held(
        self, conn: Connection, task_id: str, lease: int, values: dict[str, Any], end: bool = False
    ) -> bool:
        """Apply ``values`` to the held row; True if a cancel was requested for it (the values
        applied, or with ``end`` the task ended cancelled instead); else the lease error."""
        held = sa.and_(self._held(task_id, lease), self._columns.not_cancel_requested())
        if conn.execute(sa.update(self.table).where(held).values(values)).rowcount == 1:
            return False
        row = self._state(conn, task_id)
        if row is None or not holds(row, lease) or not row.cancel_requested:
            raise lease_error(task_id, row)
        if end:
            conn.execute(self._end(self._t.id == task_id, Outcome.CANCELLED))
        else:
            conn.execute(sa.update(self.table).where(self._t.id == task_id).values(values))
        return True

    def _holding(self, items: Iterable[tuple[str, int]]) -> sa.ColumnElement[bool]:
        """The rows that the (id, lease) pairs hold: an IN list on the primary key, fenced by a
        row-value IN over the (id, owner) pairs (:mod:`.owners`: our owner is the lease stamped
        with the timeout it wrote; a lease of an earlier version is the owner itself). Its depth does not
        grow with the number of leases (an OR per lease did, past SQLite's expression-depth
        limit of 1,000), and it binds three parameters per pair, far below SQLite's 32,766."""
        pairs = sorted(set(items))
        ids = sorted({task_id for task_id, _ in pairs})
        t = self._t
        stamped = [p for p in pairs if not p[1] % SLOT]
        as_is = [p for p in pairs if p[1] % SLOT]
        held = []
        if stamped:
            lease = t.owner - t.owner % SLOT
            held.append(sa.and_(sa.tuple_(t.id, lease).in_(stamped), stamped_by_lease(t.owner, t.timeout)))
        if as_is:
            held.append(
                sa.and_(sa.tuple_(t.id, t.owner).in_(as_is), sa.not_(stamped_by_lease(t.owner, t.timeout)))
            )
        return sa.and_(t.id.in_(ids), t.created_at.is_not(None), sa.or_(*held))

    def _lease_error(self, conn: Connection, task_id: str) -> PerfectQueueError:
        return lease_error(task_id, self._state(conn, task_id))

    def _finish_held(self) -> sa.Update:
        """Finish the rows ``:ids`` that the lease ``:lease`` holds and no cancel was asked for."""
        held = sa.and_(
            self.db.in_list(self._t.id, "ids"),
            held_by(self._t.owner, self._t.timeout, sa.bindparam("lease", type_=sa.BigInteger)),
            self._t.created_at.is_not(None),
            self._columns.not_cancel_requested(),
        )
        return self._finish_where(held)

    def _finish_where(self, where: sa.ColumnElement[bool]) -> sa.Update:
        return self._freeing(self._end(where, None))

    def _freeing(self, update: sa.Update) -> sa.Update:
        """``update``, which ends leased tasks: under fair scheduling on PostgreSQL it also
        announces that their users' ``max_running`` has room (see ``wakeups.py``), delivered
        when its transaction commits."""
        return update.returning(self._notify()) if self.fair and self.db.is_postgres else update

    def _end(self, where: sa.ColumnElement[bool], outcome: Outcome | None) -> sa.Update:
        """Finish rows: normally (``outcome`` None), dead or cancelled. A dead row keeps its
        user (for a requeue) and its own, longer, retention."""
        dead = outcome is Outcome.DEAD
        retention = self.policy.dead_retention_time if dead else self.retention_time
        values: dict[str, Any] = {
            "timeout": self.db.now() - DELETE_OFFSET + retention,
            "created_at": None,
            "outcome": None if outcome is None else outcome.value,
        }
        if outcome is not None:
            values["owner"] = 0  # a late call by the last holder is refused, not accepted
        if not dead:
            values["resource"] = None
        return sa.update(self.table).where(where).values(self._columns.values(values))

    def _state_query(self, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
        t, read = self._t, self._columns.read
        columns = (t.id, t.created_at, t.owner, t.timeout, read("outcome"), read("cancel_requested"))
        return sa.select(*columns).where(where)

    def _state(self, conn: Connection, task_id: str) -> Row[Any] | None:
        return conn.execute(self._state_query(self._t.id == task_id)).first()
