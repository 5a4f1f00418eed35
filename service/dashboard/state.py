"""The dashboard's state: what its endpoints read, held by the app (``app.state.dashboard``)."""

from __future__ import annotations

from fastapi import Request

from ..metrics import PerMinute
from ..runtime import Runtime
from ..trouble import Trouble
from .throughput import Throughput


class Dashboard:
    """The dashboard's server side: the queues it shows, their throughput counts and what this
    replica saw go wrong lately."""

    def __init__(self, runtime: Runtime, counts: PerMinute, trouble: Trouble) -> None:
        self.runtime = runtime
        self.throughput = Throughput(runtime.queues, counts)
        self.trouble = trouble


async def dashboard_of(request: Request) -> Dashboard:  # async: a plain def runs in a thread
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard
