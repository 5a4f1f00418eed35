"""Announcing across replicas that tasks became waiting, without a statement per event.

The runtime announces after each release, requeue, force-release and retry without a wait; a
submit, and under fair scheduling a finish, is announced by the store, in its own transaction.
An announcement is one store call (PostgreSQL's ``pg_notify``; a no-op elsewhere); while one is
on its way, further ones only mark that another is due, so a burst of releases costs two
announcements, not one each, and a slow or unreachable database never piles them up.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable

from ..errors import PerfectQueueError

log = logging.getLogger("perfectqueue.service")


class Announcer:
    """At most one announcement on its way and one due after it."""

    def __init__(self, send: Callable[[], Awaitable[None]], enabled: bool) -> None:
        self.send, self.enabled = send, enabled
        self.due = False
        self.sending: asyncio.Task[None] | None = None

    def announce(self) -> None:
        if not self.enabled:
            return
        self.due = True
        if self.sending is None or self.sending.done():
            self.sending = asyncio.create_task(self._send(), context=contextvars.Context())

    async def _send(self) -> None:
        while self.due:
            self.due = False
            try:
                await self.send()
            except PerfectQueueError as exc:  # the others' probes find the work meanwhile
                log.debug("could not announce waiting tasks: %s", exc)
                return
