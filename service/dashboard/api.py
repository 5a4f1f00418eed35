"""The admin endpoints only the dashboard (``/ui``) reads: the overview of every queue with its
throughput of the last hour, and each user's load against ``max_running``.

Each translates a request into calls of the queues' runtimes (counts, users, per-minute counts);
the listing, one task and the operator's actions are the queue API's own endpoints
(:mod:`..routes`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from .. import models as m
from ..operations import ADMIN
from ..problems import responses
from ..routes import QueueDep, administered, queue_info
from ..runtime import QueueRuntime
from ..security import require
from ..trouble import WINDOW as TROUBLE_WINDOW
from .state import Dashboard, dashboard_of
from .throughput import WINDOW

router = APIRouter(prefix="/v1", tags=["dashboard"])

EXAMPLE_OVERVIEW = {
    **m.EXAMPLE_QUEUE,
    "throughput": {"end": 1767225600, "submitted": [5] * WINDOW, "finished": [4] * WINDOW},
    "trouble": {"window": 900, "database_errors": 0, "lock_wait_max": 0.25},
    "warnings": {"stall_after": 300, "lock_wait": 1.0},
}


class ThroughputOut(BaseModel):
    end: int = Field(description="Unix time of the start of the last minute of the series")
    submitted: list[int] = Field(description="Tasks submitted in each of the last 60 minutes, oldest first")
    finished: list[int] = Field(description="Tasks finished in each of the last 60 minutes, oldest first")


class TroubleOut(BaseModel):
    """What went wrong lately on the replica that answered (each replica keeps its own)."""

    window: int = Field(description="Seconds looked back")
    database_errors: int = Field(description="Calls that failed because the database did not answer")
    lock_wait_max: float = Field(description="The longest wait of an acquisition for the table's lock (s)")


class WarningsOut(BaseModel):
    """When the dashboard warns about the queue (its settings ``stall_warning_after`` and
    ``lock_wait_warning``)."""

    stall_after: int = Field(description="Seconds the oldest task may wait, none leased, before a warning")
    lock_wait: float = Field(description="Seconds an acquisition may wait for the lock before a warning")


class QueueOverview(m.QueueInfo):
    """A queue's counts (as ``GET /v1/queues/{queue}``), its throughput, its recent trouble and
    when the dashboard warns about it."""

    throughput: ThroughputOut
    trouble: TroubleOut
    warnings: WarningsOut


class Overview(BaseModel):
    now: int = Field(description="The database's clock (unix seconds) of the first queue shown")
    queues: list[QueueOverview]

    model_config = m.examples({"now": 1767225642, "queues": [EXAMPLE_OVERVIEW]})


class UserOut(BaseModel):
    user: str
    leased: int = Field(description="Tasks of the user held by a worker")
    scheduled: int = Field(description="Tasks of the user due later, held by nobody")
    max_running: int | None = Field(
        description="The most tasks of the user not yet due (leased or scheduled, the original's running) "
        "that may be at once"
    )


class UserList(BaseModel):
    users: list[UserOut] = Field(
        description="Users with tasks not yet due, most first (at most 200; counted among the first "
        "metrics_count_limit tasks not yet due)"
    )

    model_config = m.examples({"users": [{"user": "acme", "leased": 2, "scheduled": 1, "max_running": 3}]})


async def overview_of(queue: QueueRuntime, dashboard: Dashboard) -> tuple[int, QueueOverview]:
    counts = await queue.counts()
    history = await dashboard.throughput.history(queue)
    series = ThroughputOut(end=history.end, submitted=history.submitted, finished=history.finished)
    recent = dashboard.trouble.recent(queue.name)
    trouble = TroubleOut(window=TROUBLE_WINDOW, **asdict(recent))
    info = queue_info(queue.name, counts).model_dump()
    settings = queue.settings
    warn = WarningsOut(stall_after=settings.stall_warning_after, lock_wait=settings.lock_wait_warning)
    return counts.now, QueueOverview(**info, throughput=series, trouble=trouble, warnings=warn)


@router.get(
    "/overview",
    operation_id="getOverview",
    dependencies=[require(*ADMIN)],
    summary="Every queue the key may administer: counts, oldest waiting task, throughput of the last hour",
    responses=responses(),
)
async def overview(
    dashboard: Annotated[Dashboard, Depends(dashboard_of)],
    request: Request,
    queue: Annotated[str | None, Query(max_length=64, description="Only this queue")] = None,
) -> Overview:
    overviews, clocks = [], []
    for served in administered(dashboard.runtime, request, queue):
        now, found = await overview_of(served, dashboard)
        clocks.append(now)
        overviews.append(found)
    if not clocks:  # nothing to show: still the database's clock (counts stopping at once)
        clocks.append((await next(iter(dashboard.runtime.queues.values())).counts(1)).now)
    return Overview(now=clocks[0], queues=overviews)


@router.get(
    "/queues/{queue}/users",
    operation_id="listUsers",
    dependencies=[require(*ADMIN)],
    summary="Per user: tasks leased and scheduled, against max_running (the fair scheduler's view)",
    responses=responses(404),
)
async def users(queue: QueueDep) -> UserList:
    loads = await queue.users(200)
    return UserList(users=[UserOut(**asdict(load)) for load in loads])
