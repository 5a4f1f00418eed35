"""The application factory: settings in, a FastAPI app out; nothing is built at import time.

This is the composition root: it builds the parts and wires them; nothing imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .._version import __version__
from . import apidocs, dashboard, metrics, problems, routes
from .config import Settings
from .fastlane import FastLane
from .httpmetrics import HttpMetrics
from .limits import BodyLimit
from .logs import RequestLog
from .operations import OPERATIONS
from .runtime import Runtime
from .security import Authentication
from .sqs import SqsEndpoint


def create_app(settings: Settings) -> FastAPI:
    """A new app serving the queues of ``settings``."""
    observer = metrics.ServiceMetrics()
    runtime = Runtime(settings, observer)
    observer.watch(
        {name: queue.counts_now for name, queue in runtime.queues.items()}, settings.metrics_count_limit
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        cleanup = asyncio.create_task(runtime.cleanup_forever())
        flush = asyncio.create_task(board.throughput.flush_forever())
        try:
            yield
        finally:
            runtime.begin_shutdown()
            await runtime.settle()
            cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleanup
            await board.throughput.stop(flush)
            runtime.dispose()

    app = FastAPI(
        title="PerfectQueue",
        version=__version__,
        summary="A highly available, at-least-once task queue on a relational database.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's loads Swagger UI from a CDN: apidocs.py serves it from the package
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = observer
    problems.install(app)
    # the innermost: what reaches the hot operations' short path has passed every check above it
    app.add_middleware(FastLane, operations=OPERATIONS, runtime=runtime)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Authentication, keys=settings.api_keys)  # no key, no body read
    if settings.sqs:  # /sqs: signed by SigV4 (its own check), so outside the bearer keys' layer
        app.add_middleware(SqsEndpoint, runtime=runtime, settings=settings)
    # the outermost: every answer has a request id, a log line and its metrics
    app.add_middleware(RequestLog, metrics=HttpMetrics(observer))
    app.add_route("/metrics", metrics.endpoint(runtime.run, observer), ["GET"], include_in_schema=False)
    app.include_router(routes.health)
    app.include_router(routes.router)
    board = dashboard.install(app, runtime, observer.per_minute, observer.trouble)
    if settings.api_docs:
        apidocs.install(app)
    return app
