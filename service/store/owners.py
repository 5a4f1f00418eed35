"""Who holds a running row, read from its ``owner`` (a table shared with the original).

A row whose ``timeout`` is in the future is held by somebody or scheduled for later. The original
Ruby PerfectQueue writes ``owner`` only in its non-fair acquisition (the MySQL
``CONNECTION_ID()``, a small number); its fair acquisition, heartbeat and ``retry!`` move
``timeout`` and leave ``owner`` as it was. So this project splits the column's values:

- ``0``: nothing of ours wrote the row's future timeout (a Ruby fair worker's lease or retry
  wait, or a Ruby ``run_at``: the original writes them alike);
- below ``CONNECTION_IDS``: a Ruby process's ``CONNECTION_ID()``;
- ``SCHEDULED + due``: scheduled by this project (a retry's wait, a ``run_at``) until ``due``;
  once ``timeout`` differs from ``due``, a Ruby process moved it (it took the task);
- ``LEASES`` and above: a lease token of this project.

A row therefore reads as scheduled only while it is exactly as this project scheduled it, and
as held (by a worker of ours, or by a Ruby process) otherwise: an operator never sees a task a
Ruby process holds as free.
"""

from __future__ import annotations

import enum
import secrets
from typing import Any

import sqlalchemy as sa

CONNECTION_IDS = 2**32
"""Owners below this (and above 0) are Ruby processes' MySQL connection ids."""

SCHEDULED = 2**61
"""``SCHEDULED + due`` marks a row this project scheduled for ``due`` (a timeout < 2**31)."""

LEASES = 2**62
"""This project's lease tokens are random in [LEASES, 2**63): 62 random bits."""


class Holder(enum.StrEnum):
    """Who holds a running task."""

    WORKER = "worker"
    """A lease of this project (its ``owner`` is the lease token)."""
    RUBY = "ruby"
    """A Ruby PerfectQueue process: its lease, or its ``retry!`` wait (written alike)."""


def new_lease() -> int:
    return LEASES + secrets.randbelow(LEASES)


def scheduled(timeout: Any) -> Any:
    """The ``owner`` of a row this project schedules for ``timeout`` (an int or an expression)."""
    if isinstance(timeout, int):
        return SCHEDULED + timeout
    return sa.literal(SCHEDULED, sa.BigInteger) + timeout


def holder_of(created_at: int | None, timeout: int, owner: int, now: int) -> Holder | None:
    """Who holds a row at ``now``: None if it is not running (waiting or ended) or scheduled."""
    if created_at is None or timeout <= now or owner == SCHEDULED + timeout:
        return None
    if owner < CONNECTION_IDS or SCHEDULED <= owner < SCHEDULED + CONNECTION_IDS:
        return Holder.RUBY
    return Holder.WORKER


def is_scheduled(owner: sa.ColumnElement[Any], timeout: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: a not-yet-due row is scheduled for later (held by nobody)."""
    return owner == sa.literal(SCHEDULED, sa.BigInteger) + timeout
