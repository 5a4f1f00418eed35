"""The queue's operations, one typed call each: what to ask, how, and what the answer is.

A ``Call[R]`` is one operation with its arguments. It knows its HTTP form, how to read the
service's answer into an ``R``, whether asking again is safe, and how the direct ``rdb_compat``
backend carries it out (through the :class:`Direct` protocol, so that this module imports no
store). A backend's ``execute(call: Call[R]) -> R`` is so typed end to end. The sync and async
queues build the same calls, so the two share every rule here and differ only in ``await``.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar
from urllib.parse import quote

from ._types import (
    BatchResult,
    BulkResult,
    Held,
    Leased,
    Page,
    QueueStats,
    RetrySpec,
    SubmitSpec,
    TaskMetadata,
)

R = TypeVar("R")

RetryItem = tuple[str, str, int | None, str | None, bool]
"""A retry of ``retry_many``: key, lease, retry_wait, error, dead."""


@dataclass(frozen=True, slots=True)
class Http:
    """A call's HTTP form: the path under the queue's, and a JSON body or query parameters."""

    method: Literal["GET", "POST"]
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class Direct(Protocol):
    """The operations as the direct ``rdb_compat`` backend carries them out, in the SDK's terms."""

    def submit(self, spec: SubmitSpec, /) -> None: ...
    def submit_many(self, specs: list[SubmitSpec], /) -> BatchResult: ...
    def poll(self, max_tasks: int, alive_time: int | None, wait: float, /) -> list[Leased]: ...
    def heartbeat(
        self, key: str, lease: str, alive_time: int | None, data: dict[str, Any] | None, /
    ) -> None: ...
    def heartbeat_many(self, tasks: list[tuple[str, str]], alive_time: int | None, /) -> BatchResult: ...
    def finish(self, key: str, lease: str, /) -> None: ...
    def finish_many(self, tasks: list[tuple[str, str]], /) -> BatchResult: ...
    def retry(
        self, key: str, lease: str, retry_wait: int | None, error: str | None, dead: bool, /
    ) -> None: ...
    def retry_many(self, tasks: list[RetryItem], /) -> BatchResult: ...
    def release(self, key: str, lease: str, /) -> None: ...
    def release_many(self, tasks: list[tuple[str, str]], /) -> BatchResult: ...
    def force_finish(self, key: str, /) -> None: ...
    def cancel(self, key: str, force: bool, /) -> TaskMetadata: ...
    def requeue(self, key: str, /) -> TaskMetadata: ...
    def get(self, key: str, /) -> TaskMetadata: ...
    def list_tasks(
        self, status: str | None, task_type: str | None, user: str | None, cursor: str | None, limit: int, /
    ) -> Page: ...
    def stats(self) -> QueueStats: ...
    def pause(self, paused: bool, /) -> QueueStats: ...
    def bulk(self, call: Bulk, /) -> BulkResult: ...


class Call(ABC, Generic[R]):
    """One operation of the queue, answered by an ``R``."""

    __slots__ = ()

    op: ClassVar[str]
    """The operation's name, as the contract calls it (for logs and tests; nothing dispatches on it)."""
    repeatable: ClassVar[bool] = True
    """Safe to send again when the outcome of a try is unknown (a connection dropped mid-way)."""

    @property
    def wait(self) -> float:
        """Seconds the service may hold the request (a long-poll), added to the request timeout."""
        return 0.0

    @abstractmethod
    def http(self) -> Http:
        """The request to the service."""

    @abstractmethod
    def parse(self, body: Any) -> R:
        """The answer, from the JSON body of the service's success response (None if empty)."""

    @abstractmethod
    def direct(self, store: Direct) -> R:
        """The answer, from the direct backend."""


class Acknowledged(Call[None]):
    """A call answered by success alone (its failures are exceptions)."""

    __slots__ = ()

    def parse(self, body: Any) -> None:
        return None


class TaskAnswer(Call[TaskMetadata]):
    """A call answered by the task's state."""

    __slots__ = ()

    def parse(self, body: Any) -> TaskMetadata:
        return TaskMetadata.from_json(body)


class BatchAnswer(Call[BatchResult]):
    """A call on many tasks, answered per task."""

    __slots__ = ()

    def parse(self, body: Any) -> BatchResult:
        return BatchResult.from_json(body)


@dataclass(frozen=True, slots=True)
class Submit(Acknowledged):
    op: ClassVar[str] = "submit"

    spec: SubmitSpec

    def http(self) -> Http:
        return Http("POST", "/submit", self.spec.to_json())

    def direct(self, store: Direct) -> None:
        store.submit(self.spec)


@dataclass(frozen=True, slots=True)
class SubmitMany(BatchAnswer):
    op: ClassVar[str] = "submit_many"

    specs: list[SubmitSpec]

    def http(self) -> Http:
        return Http("POST", "/submit-batch", {"tasks": [spec.to_json() for spec in self.specs]})

    def direct(self, store: Direct) -> BatchResult:
        return store.submit_many(self.specs)


@dataclass(frozen=True, slots=True)
class Poll(Call[list[Leased]]):
    op: ClassVar[str] = "poll"

    max_tasks: int
    alive_time: int | None
    wait: float  # the long-poll's

    def http(self) -> Http:
        body = {"max": self.max_tasks, "alive_time": self.alive_time, "wait": self.wait}
        return Http("POST", "/poll", _present(body))

    def parse(self, body: Any) -> list[Leased]:
        return [Leased.from_json(task) for task in body["tasks"]]

    def direct(self, store: Direct) -> list[Leased]:
        return store.poll(self.max_tasks, self.alive_time, self.wait)


@dataclass(frozen=True, slots=True)
class Heartbeat(Acknowledged):
    op: ClassVar[str] = "heartbeat"

    key: str
    lease: str
    alive_time: int | None = None
    data: dict[str, Any] | None = None
    """The task's whole data, replacing what is stored (None: unchanged)."""

    def http(self) -> Http:
        body = {"id": self.key, "lease": self.lease, "alive_time": self.alive_time, "data": self.data}
        return Http("POST", "/heartbeat", _present(body))

    def direct(self, store: Direct) -> None:
        store.heartbeat(self.key, self.lease, self.alive_time, self.data)


@dataclass(frozen=True, slots=True)
class HeartbeatMany(BatchAnswer):
    op: ClassVar[str] = "heartbeat_many"

    tasks: list[tuple[str, str]]
    """(key, lease) of each task."""
    alive_time: int | None = None

    @classmethod
    def of(cls, tasks: Iterable[Held], alive_time: int | None) -> HeartbeatMany:
        return cls([(task.key, task.lease) for task in tasks], alive_time)

    def http(self) -> Http:
        body = {"tasks": _leases(self.tasks), "alive_time": self.alive_time}
        return Http("POST", "/heartbeat-batch", _present(body))

    def direct(self, store: Direct) -> BatchResult:
        return store.heartbeat_many(self.tasks, self.alive_time)


@dataclass(frozen=True, slots=True)
class Finish(Acknowledged):
    op: ClassVar[str] = "finish"

    key: str
    lease: str

    def http(self) -> Http:
        return Http("POST", "/finish", {"id": self.key, "lease": self.lease})

    def direct(self, store: Direct) -> None:
        store.finish(self.key, self.lease)


@dataclass(frozen=True, slots=True)
class FinishMany(BatchAnswer):
    op: ClassVar[str] = "finish_many"

    tasks: list[tuple[str, str]]
    """(key, lease) of each task."""

    @classmethod
    def of(cls, tasks: Iterable[Held]) -> FinishMany:
        return cls([(task.key, task.lease) for task in tasks])

    def http(self) -> Http:
        return Http("POST", "/finish-batch", {"tasks": _leases(self.tasks)})

    def direct(self, store: Direct) -> BatchResult:
        return store.finish_many(self.tasks)


@dataclass(frozen=True, slots=True)
class Retry(Acknowledged):
    """Not repeatable: a second one after a first that succeeded meets a reset lease."""

    op: ClassVar[str] = "retry"
    repeatable: ClassVar[bool] = False

    key: str
    lease: str
    retry_wait: int | None = None
    error: str | None = None
    dead: bool = False

    def http(self) -> Http:
        body = {"id": self.key, "lease": self.lease, "retry_wait": self.retry_wait, "error": self.error}
        return Http("POST", "/retry", {**_present(body), **({"dead": True} if self.dead else {})})

    def direct(self, store: Direct) -> None:
        store.retry(self.key, self.lease, self.retry_wait, self.error, self.dead)


@dataclass(frozen=True, slots=True)
class Release(Acknowledged):
    """Not repeatable: a second one after a first that succeeded meets a reset lease."""

    op: ClassVar[str] = "release"
    repeatable: ClassVar[bool] = False

    key: str
    lease: str

    def http(self) -> Http:
        return Http("POST", "/release", {"id": self.key, "lease": self.lease})

    def direct(self, store: Direct) -> None:
        store.release(self.key, self.lease)


@dataclass(frozen=True, slots=True)
class RetryMany(BatchAnswer):
    """Not repeatable, as a retry alone is not."""

    op: ClassVar[str] = "retry_many"
    repeatable: ClassVar[bool] = False

    tasks: list[RetryItem]

    @classmethod
    def of(cls, tasks: Iterable[Held | RetrySpec]) -> RetryMany:
        specs = [t if isinstance(t, RetrySpec) else RetrySpec(t) for t in tasks]
        return cls([(s.task.key, s.task.lease, s.retry_wait, s.error, s.dead) for s in specs])

    def http(self) -> Http:
        items = [
            Retry(key, lease, retry_wait, error, dead).http().json or {}
            for key, lease, retry_wait, error, dead in self.tasks
        ]
        return Http("POST", "/retry-batch", {"tasks": items})

    def direct(self, store: Direct) -> BatchResult:
        return store.retry_many(self.tasks)


@dataclass(frozen=True, slots=True)
class ReleaseMany(BatchAnswer):
    """Not repeatable, as a release alone is not."""

    op: ClassVar[str] = "release_many"
    repeatable: ClassVar[bool] = False

    tasks: list[tuple[str, str]]
    """(key, lease) of each task."""

    @classmethod
    def of(cls, tasks: Iterable[Held]) -> ReleaseMany:
        return cls([(task.key, task.lease) for task in tasks])

    def http(self) -> Http:
        return Http("POST", "/release-batch", {"tasks": _leases(self.tasks)})

    def direct(self, store: Direct) -> BatchResult:
        return store.release_many(self.tasks)


@dataclass(frozen=True, slots=True)
class ForceFinish(Acknowledged):
    op: ClassVar[str] = "force_finish"

    key: str

    def http(self) -> Http:
        return Http("POST", "/force-finish", {"id": self.key})

    def direct(self, store: Direct) -> None:
        store.force_finish(self.key)


@dataclass(frozen=True, slots=True)
class Cancel(TaskAnswer):
    op: ClassVar[str] = "cancel"

    key: str
    force: bool = False

    def http(self) -> Http:
        return Http("POST", "/cancel", {"id": self.key, **({"force": True} if self.force else {})})

    def direct(self, store: Direct) -> TaskMetadata:
        return store.cancel(self.key, self.force)


@dataclass(frozen=True, slots=True)
class Requeue(TaskAnswer):
    """Not repeatable: a second requeue after a first that succeeded meets a waiting task."""

    op: ClassVar[str] = "requeue"
    repeatable: ClassVar[bool] = False

    key: str

    def http(self) -> Http:
        return Http("POST", "/requeue", {"id": self.key})

    def direct(self, store: Direct) -> TaskMetadata:
        return store.requeue(self.key)


@dataclass(frozen=True, slots=True)
class Get(TaskAnswer):
    op: ClassVar[str] = "get"

    key: str

    def http(self) -> Http:
        return Http("GET", f"/tasks/{_segment(self.key)}")

    def direct(self, store: Direct) -> TaskMetadata:
        return store.get(self.key)


@dataclass(frozen=True, slots=True)
class ListTasks(Call[Page]):
    """One page of the tasks matching the filters, after ``cursor``."""

    op: ClassVar[str] = "list"

    status: str | None
    task_type: str | None
    user: str | None
    cursor: str | None
    limit: int

    def http(self) -> Http:
        filters = {"status": self.status, "type": self.task_type, "user": self.user, "cursor": self.cursor}
        return Http("GET", "/tasks", params=_present({**filters, "limit": self.limit, "include": "data"}))

    def parse(self, body: Any) -> Page:
        return Page.from_json(body)

    def direct(self, store: Direct) -> Page:
        return store.list_tasks(self.status, self.task_type, self.user, self.cursor, self.limit)


@dataclass(frozen=True, slots=True)
class Stats(Call[QueueStats]):
    op: ClassVar[str] = "stats"

    def http(self) -> Http:
        return Http("GET", "")

    def parse(self, body: Any) -> QueueStats:
        return QueueStats.from_json(body)

    def direct(self, store: Direct) -> QueueStats:
        return store.stats()


@dataclass(frozen=True, slots=True)
class Pause(Call[QueueStats]):
    """Pause the queue (``paused``) or resume it; answered by its counts."""

    paused: bool
    op: ClassVar[str] = "pause"

    def http(self) -> Http:
        return Http("POST", "/pause" if self.paused else "/resume")

    def parse(self, body: Any) -> QueueStats:
        return QueueStats.from_json(body)

    def direct(self, store: Direct) -> QueueStats:
        return store.pause(self.paused)


@dataclass(frozen=True, slots=True)
class Bulk(Call[BulkResult]):
    """An operator's action (``requeue``, ``cancel``) on up to ``limit`` tasks the filters select,
    after ``cursor``. Safe to send again: a task acted on no longer matches its ``status``."""

    op: ClassVar[str] = "bulk"

    action: Literal["requeue", "cancel"]
    status: str
    task_type: str | None = None
    user: str | None = None
    prefix: str | None = None
    cursor: str | None = None
    limit: int = 1000

    def http(self) -> Http:
        filters = {"type": self.task_type, "user": self.user, "prefix": self.prefix, "cursor": self.cursor}
        body = {"action": self.action, "status": self.status, **_present(filters), "limit": self.limit}
        return Http("POST", "/bulk", body)

    def parse(self, body: Any) -> BulkResult:
        return BulkResult.from_json(body)

    def direct(self, store: Direct) -> BulkResult:
        return store.bulk(self)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter between tries: ``retries`` more tries at most."""

    retries: int = 5
    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int, floor: float = 0.0) -> float:
        """Seconds to sleep before try number ``attempt + 1`` (``attempt`` counts from 0)."""
        return max(floor, random.uniform(0, min(self.cap, self.base * 2**attempt)))


def _leases(tasks: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"id": key, "lease": lease} for key, lease in tasks]


def _segment(value: str) -> str:
    """One path segment; an id of '.' or '..' escaped, or URL normalisation would drop it."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _present(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}
