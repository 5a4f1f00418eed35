"""What one HTTP connection may cost: uvicorn's httptools protocol with bounds of its own.

uvicorn on httptools reads a request head of any size (httptools joins a header's pieces by
concatenation, so the CPU it spends grows with the square of the header's size) and holds a
connection for as long as its client likes: one that never finishes its head, a body sent a byte
at a time, a new connection that sends nothing. :class:`GuardedProtocol` adds, per connection:

- a head over ``max_head_bytes`` is answered ``431`` and the connection closed, after reading at
  most that many bytes of it (bytes of a head that begins in the same read as the end of the
  request before it are not counted: the head may then be one read, 64 KiB, longer);
- a head not complete ``head_timeout`` seconds after its first byte (or after the connection
  opened) is answered ``408`` and closed; a body not complete ``body_timeout`` seconds after its
  head, the same (if the app has not answered yet; else the connection is just closed);
- past ``max_connections`` open connections, a new one is answered ``503`` with ``Retry-After``
  and closed at once, so that the file descriptors it would have held stay free for others.

A request that arrives whole in one read (the usual case) costs a length check and no timer; a
timer is armed only for a connection that opened, or a request left half read by a read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int = 16 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 2000


def refusal(status: int, reason: str, headers: bytes = b"") -> bytes:
    """A whole response that ends the connection: a plain-text reason."""
    body = reason.encode("ascii") + b"\n"
    length = str(len(body)).encode("ascii")
    head = b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n" + headers
    return STATUS_LINE[status] + head + b"content-length: " + length + b"\r\n\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded by :attr:`limits` (set by :func:`guarded_protocol`)."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_head = True  # between requests, or reading a head: bytes read count against it
        self.head_begun = False  # a head's first byte was read, not yet its end
        self.head_seen = 0
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport, self.refused = transport, True
            retry = b"retry-after: %d\r\n" % RETRY_AFTER_SECONDS
            self.end(refusal(503, "too many connections to this replica: try again", retry))
            return
        super().connection_made(transport)
        self.arm(self.limits.head_timeout, 408, "the request head took too long (head_timeout)")

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        while self.in_head and data and not self.transport.is_closing():
            room = self.limits.max_head_bytes - self.head_seen
            if room <= 0:
                self.end(refusal(431, "the request head is over the limit (max_head_bytes)"))
                return
            piece, data = data[:room], data[room:]
            self.head_seen += len(piece)
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)
        if self.timer is None and not self.transport.is_closing():
            self.arm_if_unfinished()

    def arm_if_unfinished(self) -> None:
        """A request left half read by this read gets its deadline (one that came whole, the
        usual case, costs no timer)."""
        if not self.in_head:
            self.arm(self.limits.body_timeout, 408, "the request body took too long (body_timeout)")
        elif self.head_begun:
            self.arm(self.limits.head_timeout, 408, "the request head took too long (head_timeout)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_begun = True

    def on_headers_complete(self) -> None:
        self.in_head, self.head_begun, self.head_seen = False, False, 0
        self.disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_head = True
        self.disarm()
        super().on_message_complete()

    def arm(self, seconds: float, status: int, reason: str) -> None:
        self.disarm()
        self.timer = self.loop.call_later(seconds, self.expire, status, reason)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self, status: int, reason: str) -> None:
        """A deadline passed: answer it unless the app has begun an answer, and close."""
        self.timer = None
        self.end(None if self.answering() else refusal(status, reason))

    def answering(self) -> bool:
        """Is a response of this connection under way (one that a refusal must not cut into)?"""
        cycle: RequestResponseCycle | None = self.cycle  # None until a first head is read
        if cycle is None:
            return False
        if self.in_head:  # the request before this head may not be answered yet
            return not cycle.response_complete
        return cycle.response_started

    def end(self, response: bytes | None) -> None:
        if self.transport.is_closing():
            return
        if response is not None:
            self.transport.write(response)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class to hand to uvicorn (``http=``), bounded by ``limits``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
