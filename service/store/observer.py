"""What the store tells an observer (the service's metrics) of what only it can see.

The store calls these from the thread that runs the operation; an observer must be cheap and
thread-safe. Everything else about an operation (its outcome, the tasks it carried) is observed
by the caller, the service's queue runtime.
"""

from __future__ import annotations

from typing import Protocol

from .model import Outcome


class StoreObserver(Protocol):
    def lock_held(self, waited: float, held: float) -> None:
        """An acquisition took named locks (MySQL and PostgreSQL: the table's, or those of the
        users a fair acquisition served): the seconds it waited for them and held them, from the
        first taken to their release after its commit."""

    def ended(self, outcome: Outcome, count: int) -> None:
        """An acquisition ended ``count`` tasks it found undeliverable instead of leasing them
        (dead: their attempts used up; cancelled: a cancel was requested while their lease ran out)."""


class Unobserved:
    """The observer of a store nobody watches (the SDK's direct backend, the tools)."""

    def lock_held(self, waited: float, held: float) -> None:
        pass

    def ended(self, outcome: Outcome, count: int) -> None:
        pass
