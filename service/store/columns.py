"""The column set of one queue's table: the original's alone, or with this project's too.

A table the original Ruby PerfectQueue created lacks the columns of ``EXTENSION_DEFAULTS``
until ``perfectqueue init`` adds them. Until then every statement reads their defaults in their
place and writes nothing to them, so the table is served as the original would serve it (no
attempts, no dead or cancelled tasks); whether another process ran ``init`` meanwhile is looked
at again every ``SCHEMA_RECHECK`` seconds. The operations ask this object their few questions
and never branch on the column set themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from ...errors import NotSupportedError
from .database import Database
from .model import Outcome
from .schema import EXTENSION_DEFAULTS, has_extensions

SCHEMA_RECHECK = 5.0
"""Seconds between checks whether a table seen without our columns has them now."""

Selected = list[sa.ColumnElement[Any]]


class Columns:
    """Which columns one table has, and what statements read and write accordingly.

    ``changed`` is told the columns a row reads each time the set changes (statements built
    for the old set must be rebuilt). The statements :meth:`prepared` keeps are rebuilt then too.
    """

    def __init__(self, db: Database, table: sa.Table, changed: Callable[[Selected], None]) -> None:
        self.db, self.table, self._changed = db, table, changed
        self._extended = False
        self._checked_at = -SCHEMA_RECHECK
        self._prepared: dict[str, sa.Executable] = {}

    def extended(self) -> bool:
        """Has the table the columns beyond the original's? Known once seen; a table seen
        without them is looked at again every SCHEMA_RECHECK seconds (outside any transaction:
        a look may need a connection of its own)."""
        if not self._extended and time.monotonic() - self._checked_at >= SCHEMA_RECHECK:
            self._checked_at = time.monotonic()
            self.use(has_extensions(self.db, self.table))
        return self._extended

    def use(self, extended: bool) -> None:
        """Serve the table with (or without) our columns from now on."""
        self._extended = extended
        self._prepared = {}
        self._changed(self.selected())

    def prepared(self, name: str, build: Callable[[], sa.Executable]) -> sa.Executable:
        """The statement ``name`` for this column set, built on first use (calls bind values)."""
        statement = self._prepared.get(name)
        if statement is None:
            statement = self._prepared[name] = build()
        return statement

    def read(self, name: str) -> sa.ColumnElement[Any]:
        """The column ``name`` as a statement reads it: itself, or its default under its name."""
        if self._extended or name not in EXTENSION_DEFAULTS:
            return self.table.c[name]
        default = EXTENSION_DEFAULTS[name]
        return (sa.null() if default is None else sa.literal_column(str(default))).label(name)

    def selected(self) -> Selected:
        """Every column as a statement reads it (what a row of the table holds)."""
        return [self.read(column.name) for column in self.table.c]

    def values(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` to write, less those of columns the table lacks."""
        if self._extended:
            return values
        return {name: value for name, value in values.items() if name not in EXTENSION_DEFAULTS}

    def not_cancel_requested(self) -> sa.ColumnElement[bool]:
        return self.table.c.cancel_requested == 0 if self._extended else sa.true()

    def outcome_is(self, outcome: Outcome | None) -> sa.ColumnElement[bool]:
        """Rows that ended so (None: normally, or not ended); without the column, none ended
        otherwise than normally."""
        if not self._extended:
            return sa.true() if outcome is None else sa.false()
        column = self.table.c.outcome
        return column.is_(None) if outcome is None else column == outcome.value

    @property
    def attempt(self) -> int:
        """What an acquisition adds to a task's attempts: 1, or 0 where the table keeps none."""
        return 1 if self._extended else 0

    def require(self, what: str) -> None:
        """NotSupportedError unless the table has our columns (looked at afresh if due)."""
        if not self.extended():
            raise NotSupportedError(f"{what} needs the columns that `perfectqueue init` adds to this table")
