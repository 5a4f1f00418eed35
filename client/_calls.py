"""The queue's operations as data: what to ask, and whether asking again is safe.

A ``Call`` names an operation and its arguments; a backend (HTTP or the direct ``rdb_compat``
store) carries it out. The sync and async queues build the same calls, so the two share every
rule here and differ only in ``await``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._types import SubmitSpec


class Held(Protocol):
    """A leased task as the batch calls see it (the sync and async SDK's acquired tasks)."""

    @property
    def key(self) -> str: ...

    @property
    def lease(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Call:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    repeatable: bool = True
    """Safe to send again when the outcome of a try is unknown (a connection dropped mid-way).
    Retry and release are not: a second one after a first that succeeded meets a reset lease."""
    wait: float = 0.0
    """Seconds the service may hold the request (a long-poll), added to the request timeout."""


def submit(spec: SubmitSpec) -> Call:
    return Call("submit", {"task": spec})


def submit_many(specs: list[SubmitSpec]) -> Call:
    return Call("submit_many", {"tasks": specs})


def poll(max_tasks: int, alive_time: int | None, wait: float) -> Call:
    return Call("poll", {"max": max_tasks, "alive_time": alive_time, "wait": wait}, wait=wait)


def heartbeat(key: str, lease: str, alive_time: int | None, data: dict[str, Any] | None) -> Call:
    return Call("heartbeat", {"id": key, "lease": lease, "alive_time": alive_time, "data": data})


def heartbeat_many(tasks: Iterable[Held], alive_time: int | None) -> Call:
    items = [(task.key, task.lease) for task in tasks]
    return Call("heartbeat_many", {"tasks": items, "alive_time": alive_time})


def finish(key: str, lease: str) -> Call:
    return Call("finish", {"id": key, "lease": lease})


def finish_many(items: list[tuple[str, str]]) -> Call:
    return Call("finish_many", {"tasks": items})


def retry(key: str, lease: str, retry_wait: int | None, error: str | None = None) -> Call:
    args = {"id": key, "lease": lease, "retry_wait": retry_wait, "error": error}
    return Call("retry", args, repeatable=False)


def release(key: str, lease: str) -> Call:
    return Call("release", {"id": key, "lease": lease}, repeatable=False)


def force_finish(key: str) -> Call:
    return Call("force_finish", {"id": key})


def cancel(key: str) -> Call:
    return Call("cancel", {"id": key})


def requeue(key: str) -> Call:
    """Not repeatable: a second requeue after a first that succeeded meets a waiting task."""
    return Call("requeue", {"id": key}, repeatable=False)


def get(key: str) -> Call:
    return Call("get", {"id": key})


def list_tasks(
    status: str | None, task_type: str | None, user: str | None, cursor: str | None, limit: int
) -> Call:
    return Call("list", {"status": status, "type": task_type, "user": user, "cursor": cursor, "limit": limit})


def stats() -> Call:
    return Call("stats")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter between tries: ``retries`` more tries at most."""

    retries: int = 5
    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int, floor: float = 0.0) -> float:
        """Seconds to sleep before try number ``attempt + 1`` (``attempt`` counts from 0)."""
        return max(floor, random.uniform(0, min(self.cap, self.base * 2**attempt)))
