"""The dashboard's state: what its endpoints read, held by the app (``app.state.dashboard``)."""

from __future__ import annotations

from fastapi import Request

from ..metrics import PerMinute
from ..runtime import Runtime
from .throughput import Throughput


class Dashboard:
    """The dashboard's server side: the queues it shows and their throughput counts."""

    def __init__(self, runtime: Runtime, counts: PerMinute) -> None:
        self.runtime = runtime
        self.throughput = Throughput(runtime.queues, counts)


async def dashboard_of(request: Request) -> Dashboard:  # async: a plain def runs in a thread
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard
