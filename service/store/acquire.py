"""Which waiting rows an acquisition takes: oldest first, or in the original's fair order.

Both run inside the acquiring transaction (``QueueStore.acquire`` leases what they return).
Oldest first on MariaDB/MySQL reads with ``FOR UPDATE SKIP LOCKED``, so pollers run in parallel.
Fair acquisition plans from the running count of each user and the head of each user's waiting
tasks (one loose index scan of (resource, timeout): its cost grows with users, not with the
backlog), then reads only the rows it planned. What keeps ``max_running`` exact is a lock: one
per user it serves, or the table's named lock (see ``userlocks.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Row

from . import fair
from .database import Database, server_at_least
from .model import EVENT_HORIZON
from .schema import resource_index, timeout_index
from .userlocks import UserLocks

FAIR_ROUNDS = 3
HEAD_LOOKUPS = 200  # heads whose max_running one statement looks up
SHAPES_KEPT = 512  # statements _per_user keeps


class Acquisition:
    """The row selection of one table's acquisitions."""

    def __init__(
        self, db: Database, table: sa.Table, *, fair: bool, lock: str, users: UserLocks | None = None
    ) -> None:
        self.db, self.table, self.fair, self.lock = db, table, fair, lock
        self.users = users or UserLocks(db, table, "table", lambda: False)
        self._t = table.c
        self._columns: list[sa.ColumnElement[Any]] = list(table.c)
        self._oldest: sa.Select[Any] | None = None  # built once: each acquisition only executes it
        self._resource_indexed = False  # known once seen: a table the original created lacks it
        self._head_limits: dict[tuple[str | None, int], int | None] = {}  # (user, head) -> max_running
        # MySQL: the rows read for a user include its next one, whose max_running the next plan
        # then need not look up (SQLite's heads come with their max_running)
        self._next_heads = 1 if db.scans_heads_by_group else 0
        self._plan: tuple[sa.Select[Any] | None, sa.CompoundSelect[Any]] | None = None
        self._skip_plan: sa.CompoundSelect[Any] | None = None  # see _skip_scan_plan
        self._shaped: dict[tuple[str, int, int], sa.Executable] = {}  # see _per_user

    @property
    def columns(self) -> list[sa.ColumnElement[Any]]:
        """What an acquisition reads of each row (the store narrows it for a table the original
        created, until init adds the columns beyond the original's)."""
        return self._columns

    def use_columns(self, columns: list[sa.ColumnElement[Any]]) -> None:
        """Read ``columns`` from now on (the table's column set changed): the statements built
        for the old set are built again."""
        self._columns, self._oldest, self._shaped = columns, None, {}

    def rows(self, conn: Connection, limit: int, lock: str | None) -> tuple[int, Sequence[Row[Any]]]:
        """The database's clock and up to ``limit`` rows waiting by it, to lease, locked against
        concurrent changes (``lock``: the table's lock the transaction took, see lock_name).
        Oldest first reads the clock as a column of its one SELECT (0 when nothing waits); fair
        acquisition reads it with what it plans from (see _plan_inputs)."""
        if not self.fair:
            rows = self._oldest_rows(conn, limit)
            return max((r.now for r in rows), default=0), rows
        now, running, heads = self._plan_inputs(conn)
        users = self.users if lock is None and not self.db.is_sqlite else None
        return now, self._fair_rows(conn, now, limit, running, heads, users=users)

    def lock_name(self) -> str | None:
        """The table's named lock acquisition takes, if this mode needs it.

        ``get_lock`` mode (or a server without SKIP LOCKED) takes the original's
        ``GET_LOCK('<table>')`` for every acquisition. Fair acquisition plans from running
        counts, so it must see every earlier acquisition of the users it serves committed: it
        locks those users (``userlocks.py``), or, where that does not apply (a table Ruby
        processes may share), the table.
        """
        if self.db.is_sqlite:
            return None  # BEGIN IMMEDIATE already serialises writers
        if self.lock == "get_lock" or not self.db.supports_skip_locked():
            return self.table.name
        if self.fair and not self.users.apply():
            return self.table.name
        return None

    def _lock_rows(self, query: sa.Select[Any], skip_locked: bool = False) -> sa.Select[Any]:
        """Row locks on what acquisition read, so no concurrent change is overwritten."""
        if self.db.is_sqlite:
            return query
        return query.with_for_update(skip_locked=skip_locked)

    def _waiting(self, now: int | sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
        return sa.and_(
            self._t.timeout > EVENT_HORIZON, self._t.timeout <= now, self._t.created_at.is_not(None)
        )

    @property
    def reads_as_it_leases(self) -> bool:
        """Do the rows come with their lease, in one statement (``QueueStore``'s, from
        :meth:`oldest`)? On PostgreSQL, oldest first, under row locks only."""
        return self.db.is_postgres and not self.fair and self.lock_name() is None

    def oldest(self) -> sa.Select[Any]:
        """The ``:limit`` oldest waiting rows and the clock (``now``), locked (SKIP LOCKED unless
        the table's lock is taken)."""
        if self._oldest is None:
            now = self.db.now()
            query = (
                sa.select(*self.columns, now.label("now"))
                .where(self._waiting(now))
                .order_by(self._t.timeout)
                .limit(sa.bindparam("limit", type_=sa.Integer))
                .with_hint(self.table, f"FORCE INDEX (`{timeout_index(self.table.name)}`)", "mysql")
            )
            self._oldest = self._lock_rows(query, skip_locked=self.lock_name() is None)
        return self._oldest

    def _oldest_rows(self, conn: Connection, limit: int) -> Sequence[Row[Any]]:
        return conn.execute(self.oldest(), {"limit": limit}).all()

    def _fair_rows(
        self,
        conn: Connection,
        now: int,
        limit: int,
        running: dict[str, int],
        heads: list[fair.Head],
        *,
        users: UserLocks | None,
    ) -> list[Row[Any]]:
        """The rows of the fair plan; with ``users``, of users it could lock (the others are
        being served elsewhere), whose running counts it takes again under their locks."""
        fetched: dict[str | None, list[Row[Any]]] = {}
        available: dict[str | None, int] = {}
        locked: set[str] = set()

        def plan() -> dict[str | None, int]:
            if users is None:
                return fair.plan(heads, running, limit, available)
            return users.plan(conn, now, limit, heads, running=running, available=available, locked=locked)

        for _ in range(FAIR_ROUNDS):
            counts = plan()
            wanted = {}
            for user, count in counts.items():
                have = len(fetched.setdefault(user, []))
                if count > have:
                    wanted[user] = (count - have + self._next_heads, have)
            for user, rows in self._rows_of_users(conn, now, wanted, users is not None).items():
                needed = wanted[user][0] - self._next_heads
                fetched[user] += rows[:needed]
                if len(rows) < needed:
                    available[user] = len(fetched[user])
                if self._next_heads:  # whichever of them is a head at the next plan, its limit
                    # is known (that plan keeps only the heads it finds)
                    for row in rows:
                        self._head_limits.setdefault((user, row.timeout), row.max_running)
            if all(count <= len(fetched[user]) for user, count in counts.items()):
                break
        chosen: list[Row[Any]] = []
        for user, count in counts.items():
            started = running.get(user or "", 0)
            for row in fetched[user][:count]:
                if fair.allowed(user, row.max_running, started):
                    started += 1
                    chosen.append(row)
        return chosen

    def _plan_inputs(self, conn: Connection) -> tuple[int, dict[str, int], list[fair.Head]]:
        """The database's clock, each user's running count and each user's head (its oldest
        waiting task), in one statement whose every clock reading is the same instant (the
        statement's start): on MySQL by a loose index scan, elsewhere by ``_skip_scan_plan``."""
        if not self.db.scans_heads_by_group:
            if self._skip_plan is None:
                self._skip_plan = self._skip_scan_plan()
            clock, counts, found = 0, {}, []
            for kind, user, value, max_running in conn.execute(self._skip_plan).all():
                if kind == "now":
                    clock = value
                elif kind == "running":
                    counts[user] = value
                else:
                    found.append(fair.Head(user, value, max_running))
            return clock, counts, found
        if self._plan is None or not self._resource_indexed:
            self._plan = self._planning_statements(conn)
        as_json, as_rows = self._plan
        now, parts = _json_plan(conn, as_json) if as_json is not None else (0, None)
        if parts is None:
            self._plan = (None, as_rows)  # cut short once, it would be again: rows from now on
            rows = conn.execute(as_rows).all()
            now = next(value for kind, _, value in rows if kind == "now")
            parts = [row for row in rows if row[0] != "now"]
        running, heads = {}, []
        for kind, user, value in parts:
            if kind == "running":
                running[user] = value
            else:
                heads.append((user, value))
        return now, running, self._with_limits(conn, heads)

    def _planning_statements(self, conn: Connection) -> tuple[sa.Select[Any] | None, sa.CompoundSelect[Any]]:
        """The plan's inputs as rows ("now", None, clock), ("running", user, count) and ("head",
        user, oldest waiting timeout); and, where the server has ``JSON_ARRAYAGG``, the clock
        with the others as one JSON array and how many there are (so that an array the server
        cut short is known, and the rows read instead): 1,000 users' heads are then one string to
        parse rather than 1,000 rows for the driver to decode, most of such a plan's own cost."""
        clock = self.db.now()
        running = self._running_query(clock)
        heads = self._force_resource_index(
            conn,
            sa.select(sa.literal("head"), self._t.resource, sa.func.min(self._t.timeout))
            .where(self._t.timeout > EVENT_HORIZON, self._t.timeout <= clock)
            .group_by(self._t.resource),
        )
        as_rows: sa.CompoundSelect[Any] = sa.union_all(
            sa.select(sa.literal("now"), sa.null(), clock), running, heads
        )
        if not server_at_least(conn, mariadb=(10, 5), mysql=(5, 7, 22)):
            return None, as_rows
        kind, user, value = sa.union_all(running, heads).subquery("plan").c
        listed = sa.func.json_arrayagg(sa.func.json_array(kind, user, value))
        return sa.select(clock, sa.func.count(), listed), as_rows

    def _running_query(self, now: int | sa.ColumnElement[int]) -> sa.Select[Any]:
        """("running", user, count) for every user with tasks not yet due."""
        return (
            sa.select(sa.literal("running"), self._t.resource, sa.func.count())
            .where(self._t.timeout > now, self._t.created_at.is_not(None), self._t.resource.is_not(None))
            .group_by(self._t.resource)
        )

    def _with_limits(self, conn: Connection, found: list[tuple[str | None, int]]) -> list[fair.Head]:
        """Heads (user, head timeout) with their ``max_running``, looked up only for heads not
        seen by the previous acquisition: with many users, looking up every head's row is most
        of a plan's cost, and most heads do not move between two acquisitions. Any row at the
        head's (user, timeout) is as good as another (ties are broken arbitrarily anyway), and a
        row's ``max_running`` never changes; ``max_running`` here orders users only, each row's
        own is what caps them."""
        limits = {key: self._head_limits[key] for key in found if key in self._head_limits}
        missing = [key for key in found if key not in limits]
        for start in range(0, len(missing), HEAD_LOOKUPS):
            chunk = missing[start : start + HEAD_LOOKUPS]
            params = {f"head_{index}": head for index, (_, head) in enumerate(chunk)}
            lookup = self._per_user(conn, "lookup", [user for user, _ in chunk], params, self._lookup_part)
            for row in conn.execute(lookup, params).all():
                limits.setdefault(chunk[row.part], row.max_running)
        self._head_limits = limits
        return [fair.Head(user, head, limits.get((user, head))) for user, head in found]

    def _lookup_part(self, index: int, user: sa.ColumnElement[bool]) -> sa.Select[Any]:
        """The max_running of one row at head ``index``'s (user, timeout), however many share it."""
        return (
            sa.select(self._t.max_running, _part(index))
            .where(user, self._t.timeout == sa.bindparam(f"head_{index}", type_=sa.Integer))
            .limit(1)
        )

    def _force_resource_index(self, conn: Connection, query: sa.Select[Any]) -> sa.Select[Any]:
        """``query`` hinted to use the (resource, timeout) index, once it exists."""
        return self._hinted(query) if self._has_resource_index(conn) else query

    def _hinted(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.with_hint(self.table, f"FORCE INDEX (`{resource_index(self.table.name)}`)", "mysql")

    def _has_resource_index(self, conn: Connection) -> bool:
        """Known once seen: hinting a missing index is an error, and a table the original created
        lacks it until ``init`` adds it."""
        if not self._resource_indexed:
            names = {ix["name"] for ix in sa.inspect(conn).get_indexes(self.table.name)}
            self._resource_indexed = resource_index(self.table.name) in names
        return self._resource_indexed

    def _skip_scan_plan(self) -> sa.CompoundSelect[Any]:
        """The plan's inputs where there is no loose index scan (SQLite, PostgreSQL), in one
        statement, one instant (its clock): rows ("now", None, clock, None), ("running", user,
        count, None) and ("head", user, oldest waiting timeout, its max_running), the heads from
        a recursive query stepping from user to user along the (resource, timeout) index inside
        the database (:meth:`_heads`). One statement rather than four: under fair scheduling the
        plan is read with the table's lock held, and each round trip was held with it."""
        t, clock = self._t, self.db.now()
        waiting = sa.and_(t.timeout > EVENT_HORIZON, t.timeout <= clock)
        no_user = (  # a subquery: SQLite takes no ORDER BY or LIMIT on a member of a UNION
            sa.select(t.timeout, t.max_running)
            .where(t.resource.is_(None), waiting)
            .order_by(t.timeout)
            .limit(1)
            .subquery("no_user")
        )
        no_name, no_limit = sa.cast(sa.null(), t.resource.type), sa.cast(sa.null(), sa.Integer)
        return sa.union_all(
            sa.select(sa.literal("now"), no_name, clock, no_limit),
            self._running_query(clock).add_columns(no_limit),
            sa.select(sa.literal("head"), no_name, no_user.c.timeout, no_user.c.max_running),
            self._heads(waiting),
        )

    def _heads(self, waiting: sa.ColumnElement[bool]) -> sa.Select[Any]:
        """("head", user, timeout, max_running) of every user with a waiting task. On PostgreSQL
        each step of the recursion is one index seek that finds the next user's head row whole
        (a ``LATERAL`` subquery: the first waiting row after the previous user in (resource,
        timeout) order is the next user's oldest); SQLite, without ``LATERAL``, steps from user
        to user and then looks up each head's timeout and max_running (three seeks per user)."""
        t = self._t

        def first(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
            return (
                sa.select(t.resource.label("user"), t.timeout, t.max_running)
                .where(*where, waiting)
                .order_by(t.resource, t.timeout)
                .limit(1)
            )

        if self.db.is_postgres:
            anchor = first(t.resource.is_not(None)).subquery("anchor")
            heads = sa.select(anchor).cte("heads", recursive=True)
            previous = heads.alias("previous")
            step = first(t.resource > previous.c.user).lateral("step")
            heads = heads.union_all(sa.select(step).select_from(previous.join(step, sa.true())))
            return sa.select(sa.literal("head"), heads.c.user, heads.c.timeout, heads.c.max_running)

        def first_waiting(column: sa.ColumnElement[Any], *where: sa.ColumnElement[bool]) -> Any:
            return first(*where).with_only_columns(column).scalar_subquery()

        users = sa.select(first_waiting(t.resource, t.resource.is_not(None)).label("user")).cte(
            "users", recursive=True
        )
        previous_user = users.alias("previous")
        users = users.union_all(
            sa.select(first_waiting(t.resource, t.resource > previous_user.c.user)).where(
                previous_user.c.user.is_not(None)
            )
        )
        return sa.select(
            sa.literal("head"),
            users.c.user,
            first_waiting(t.timeout, t.resource == users.c.user),
            first_waiting(t.max_running, t.resource == users.c.user),
        ).where(users.c.user.is_not(None))

    def _rows_of_users(
        self, conn: Connection, now: int, wanted: dict[str | None, tuple[int, int]], skip_locked: bool
    ) -> dict[str | None, list[Row[Any]]]:
        """For each user, up to ``limit`` of its waiting rows oldest first, after ``offset``
        (``wanted``: user -> (limit, offset)): one statement for all of them, locked on MySQL
        and PostgreSQL (``skip_locked``: rows another transaction locked are passed over)."""
        users = list(wanted)
        found: dict[str | None, list[Row[Any]]] = {user: [] for user in users}
        if not users:
            return found
        if self.db.is_postgres:
            named = [user for user in users if user is not None]
            lateral, bound = self._lateral_rows(now, named, wanted, skip_locked)
            by_part = [*named, None]  # the part after the named users' is tasks without a user
            for row in conn.execute(lateral, bound).all():
                found[by_part[row.part]].append(row)
            return found
        params: dict[str, Any] = {"now": now}
        for index, (limit, offset) in enumerate(wanted.values()):
            params.update({f"limit_{index}": limit, f"offset_{index}": offset})
        part = self._skipping_rows_part if skip_locked else self._rows_part
        query = self._per_user(conn, "skipping rows" if skip_locked else "rows", users, params, part)
        for row in conn.execute(query, params).all():
            found[users[row.part]].append(row)
        return found

    def _lateral_rows(
        self, now: int, named: list[str], wanted: dict[str | None, tuple[int, int]], skip_locked: bool
    ) -> tuple[sa.Executable, dict[str, Any]]:
        """PostgreSQL: the named users' rows as one ``LATERAL`` subquery over arrays of users,
        limits and offsets, and tasks without a user (if wanted) as one more part: the same
        statement whatever the number of users, one subquery to plan. A union of one part per user was
        planned anew at each acquisition (9 ms for 50 users, the table's lock held meanwhile).
        Each row's ``part`` is its user's index in ``named``; ``len(named)`` for no user."""
        params: dict[str, Any] = {
            "now": now,
            "users": named,
            "limits": [wanted[user][0] for user in named],
            "offsets": [wanted[user][1] for user in named],
        }
        no_user = None in wanted
        if no_user:
            limit, offset = wanted[None]
            params.update({"unnamed": len(named), "unnamed_limit": limit, "unnamed_offset": offset})
        key = ("lateral", int(skip_locked), int(no_user))
        statement = self._shaped.get(key)
        if statement is None:
            arrays = sa.func.unnest(
                sa.bindparam("users", type_=ARRAY(self._t.resource.type)),
                sa.bindparam("limits", type_=ARRAY(sa.Integer)),
                sa.bindparam("offsets", type_=ARRAY(sa.Integer)),
            ).table_valued(
                sa.column("user", self._t.resource.type),
                sa.column("first", sa.Integer),
                sa.column("skip", sa.Integer),
                with_ordinality="nth",
            )
            wanted_users = arrays.render_derived(name="wanted")
            rows = self._lock_rows(
                sa.select(*self.columns)
                .where(
                    self._t.resource == wanted_users.c.user,
                    self._waiting(sa.bindparam("now", type_=sa.Integer)),
                )
                .order_by(self._t.timeout)
                .limit(wanted_users.c.first)
                .offset(wanted_users.c.skip),
                skip_locked=skip_locked,
            ).lateral("rows")
            by_user = sa.select(rows, (wanted_users.c.nth - 1).label("part")).select_from(
                wanted_users.join(rows, sa.true())
            )
            statement = by_user
            if no_user:
                part = sa.bindparam("unnamed", type_=sa.Integer).label("part")
                unnamed = self._user_rows(
                    self._t.resource.is_(None), part, "unnamed_limit", "unnamed_offset", skip_locked
                )
                statement = sa.union_all(by_user, sa.select(unnamed.subquery()))
            self._shaped[key] = statement
        return statement, params

    def _rows_part(
        self, index: int, user: sa.ColumnElement[bool], skip_locked: bool = False
    ) -> sa.Select[Any]:
        """Up to ``limit_<index>`` of one user's waiting rows, oldest first, after ``offset_<index>``."""
        return self._user_rows(user, _part(index), f"limit_{index}", f"offset_{index}", skip_locked)

    def _user_rows(
        self,
        user: sa.ColumnElement[bool],
        part: sa.ColumnElement[int],
        limit: str,
        offset: str,
        skip_locked: bool,
    ) -> sa.Select[Any]:
        """Up to ``:<limit>`` of the waiting rows ``user`` selects, oldest first, after ``:<offset>``."""
        return self._lock_rows(
            sa.select(*self.columns, part)
            .where(user, self._waiting(sa.bindparam("now", type_=sa.Integer)))
            .order_by(self._t.timeout)
            .limit(sa.bindparam(limit, type_=sa.Integer))
            .offset(sa.bindparam(offset, type_=sa.Integer)),
            skip_locked=skip_locked,
        )

    def _skipping_rows_part(self, index: int, user: sa.ColumnElement[bool]) -> sa.Select[Any]:
        return self._rows_part(index, user, skip_locked=True)

    def _per_user(
        self,
        conn: Connection,
        kind: str,
        users: list[str | None],
        params: dict[str, Any],
        part: Callable[[int, sa.ColumnElement[bool]], sa.Select[Any]],
    ) -> sa.Executable:
        """One statement of ``part``s, one per user (each row names its part in the column
        ``part``: a case-insensitive column may spell a user differently), and ``params``
        completed with the users. The statement is built once per kind and shape (how many users,
        and which part is for tasks without a user): planning many users would otherwise spend
        more time building statements than the database spends running them."""
        no_user = users.index(None) if None in users else -1
        params.update({f"user_{index}": user for index, user in enumerate(users) if user is not None})
        key = (kind, len(users), no_user)
        statement = self._shaped.get(key)
        if statement is None:
            if len(self._shaped) >= SHAPES_KEPT:
                self._shaped.clear()
            indexed = self._has_resource_index(conn)  # asked once, not once per part
            parts = []
            for index in range(len(users)):
                user = (
                    self._t.resource.is_(None)
                    if index == no_user
                    else self._t.resource == sa.bindparam(f"user_{index}", type_=sa.String)
                )
                one = self._hinted(part(index, user)) if indexed else part(index, user)
                parts.append(one if self.db.locks_in_unions else sa.select(one.subquery()))
            statement = self._shaped[key] = parts[0] if len(parts) == 1 else sa.union_all(*parts)
        return statement


def _json_plan(conn: Connection, statement: sa.Select[Any]) -> tuple[int, list[Any] | None]:
    """The clock and the plan's rows from its JSON form; None if the array was cut short (at
    the server's ``group_concat_max_len``)."""
    now, count, found = conn.execute(statement).one()
    try:
        parts = json.loads(found) if found is not None else []
    except ValueError:
        return now, None
    return now, parts if len(parts) == count else None


def _part(index: int) -> sa.ColumnElement[int]:
    return sa.literal_column(str(index), sa.Integer).label("part")
