"""Who holds a running row, read from its ``owner`` (a table shared with the original).

A row whose ``timeout`` is in the future is held by somebody or scheduled for later. The original
Ruby PerfectQueue writes ``owner`` only in its non-fair acquisition (the MySQL
``CONNECTION_ID()``, a small number); its fair acquisition, heartbeat and ``retry!`` move
``timeout`` and leave ``owner`` as it was. So with every future timeout this project writes, it
stamps ``owner`` with that timeout:

- ``0``: nothing of ours wrote the row's future timeout (a Ruby fair worker's lease or retry
  wait, or a Ruby ``run_at``: the original writes them alike);
- below ``CONNECTION_IDS``: a Ruby process's ``CONNECTION_ID()``;
- ``SCHEDULED + due``: scheduled by this project (a retry's wait, a ``run_at``) until ``due``;
- ``lease + timeout % SLOT``: leased by this project, ``lease`` a random multiple of ``SLOT``
  from ``LEASES`` on (46 random bits), ``timeout`` the lease's end as its poll or last
  heartbeat wrote it.

Once ``timeout`` no longer matches its stamp, a Ruby process moved it (it took the task): the
row reads as held by Ruby, and the lease of ours it carries no longer holds it. (A lease's stamp
keeps the timeout's low 16 bits only, so that the lease keeps 46 random bits: a Ruby
acquisition that moves the timeout by an exact multiple of 65,536 s, about 18 hours, is not
seen.) A row reads as scheduled only while it is exactly as this project scheduled it, so an
operator never sees a task a Ruby process holds as free.

A lease an earlier version of this project issued (any number below 2**63) is written as it is:
it holds a row whose ``owner`` equals it and carries no stamp of ours, so its holder's calls go
on across an upgrade. (On an ended row, where the stamp is gone, presenting the row's owner
itself as such a lease answers AlreadyFinished, as its own lease would: nothing changes.)
"""

from __future__ import annotations

import enum
import secrets
from typing import Any

import sqlalchemy as sa

SLOT = 2**16
"""A lease is a multiple of this; the owner it writes adds the timeout modulo this."""

CONNECTION_IDS = 2**32
"""Owners below this (and above 0) are Ruby processes' MySQL connection ids."""

SCHEDULED = 2**61
"""``SCHEDULED + due`` marks a row this project scheduled for ``due`` (a timeout < 2**31)."""

LEASES = 2**62
"""This project's leases are the multiples of SLOT in [LEASES, 2**63)."""


class Holder(enum.StrEnum):
    """Who holds a running task."""

    WORKER = "worker"
    """A lease of this project."""
    RUBY = "ruby"
    """A Ruby PerfectQueue process: its lease, or its ``retry!`` wait (written alike)."""


def new_lease() -> int:
    return LEASES + SLOT * secrets.randbelow(LEASES // SLOT)


def scheduled(timeout: Any) -> Any:
    """The ``owner`` of a row this project schedules for ``timeout`` (an int or an expression)."""
    if isinstance(timeout, int):
        return SCHEDULED + timeout
    return sa.literal(SCHEDULED, sa.BigInteger) + timeout


def leased(lease: int | sa.BindParameter[int], timeout: Any) -> Any:
    """The ``owner`` of a row ``lease`` holds until ``timeout`` (an int or an expression); a
    bound ``lease`` is one of :func:`new_lease`'s."""
    if isinstance(lease, sa.BindParameter):
        return lease + timeout % SLOT
    if lease % SLOT:
        return lease  # a lease of an earlier version: written as it is
    if isinstance(timeout, int):
        return lease + timeout % SLOT
    return sa.literal(lease, sa.BigInteger) + timeout % SLOT


def holder_of(created_at: int | None, timeout: int, owner: int, now: int) -> Holder | None:
    """Who holds a row at ``now``: None if it is not running (waiting or ended) or scheduled."""
    if created_at is None or timeout <= now or owner == SCHEDULED + timeout:
        return None
    if owner >= LEASES and owner % SLOT == timeout % SLOT:
        return Holder.WORKER
    return Holder.RUBY


def holds(owner: int, timeout: int, lease: int) -> bool:
    """Does ``lease`` hold a live row with this owner and timeout? A lease of ours holds the row
    its stamp matches; one of an earlier version, a row that carries it and no stamp of ours."""
    if owner == lease + timeout % SLOT:
        return True
    return owner == lease and not (owner >= LEASES and owner % SLOT == timeout % SLOT)


def same_lease(owner: int, lease: int) -> bool:
    """Was the row (ended since) last held by ``lease``?"""
    return owner == lease if lease % SLOT else owner - owner % SLOT == lease


def is_scheduled(owner: sa.ColumnElement[Any], timeout: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: a not-yet-due row is scheduled for later (held by nobody)."""
    return owner == sa.literal(SCHEDULED, sa.BigInteger) + timeout


def held_by(
    owner: sa.ColumnElement[Any], timeout: sa.ColumnElement[Any], lease: int | sa.BindParameter[Any]
) -> sa.ColumnElement[bool]:
    """SQL: the live row is held by ``lease`` (an int or a bound parameter), as :func:`holds`."""
    bound = sa.literal(lease, sa.BigInteger) if isinstance(lease, int) else lease
    return sa.or_(
        owner == bound + timeout % SLOT, sa.and_(owner == bound, sa.not_(stamped_by_lease(owner, timeout)))
    )


def stamped_by_lease(owner: sa.ColumnElement[Any], timeout: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL: the owner is a lease of ours stamped with this timeout."""
    return sa.and_(owner >= sa.literal(LEASES, sa.BigInteger), owner % SLOT == timeout % SLOT)
