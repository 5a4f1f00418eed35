"""The application factory: settings in, a FastAPI app out; nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI

from .. import __version__
from ..errors import PerfectQueueError
from . import metrics, problems, routes, ui
from .coalesce import Coalesced
from .config import ResolvedQueue, Settings
from .fastlane import FastLane
from .gauges import QueueGauges
from .httpmetrics import HttpMetrics
from .limits import BodyLimit
from .logs import RequestLog
from .longpoll import LongPoll
from .security import Authentication
from .store import Database, PoolOptions, QueueStore

log = logging.getLogger("perfectqueue.service")

T = TypeVar("T")


@dataclass
class Queue:
    """One served queue: its settings, its store, its waiting polls and its merged calls."""

    settings: ResolvedQueue
    store: QueueStore
    longpoll: LongPoll
    coalesced: Coalesced


class Runtime:
    """What the app holds: databases, queues, and the thread limiter for store calls.

    Store calls run in threads, at most as many at once as the pools have connections, so a
    thread never waits for a connection and a burst of polls queues here, not in the pool.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter = anyio.CapacityLimiter(settings.pool_size + settings.pool_overflow)
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.databases: dict[str, Database] = {}
        self.queues: dict[str, Queue] = {}
        self.metrics = metrics.ServiceMetrics()
        pool = PoolOptions(size=settings.pool_size, overflow=settings.pool_overflow)
        for name in settings.queues:
            resolved = settings.queue(name)
            if resolved.url not in self.databases:
                self.databases[resolved.url] = Database(resolved.url, pool, settings.isolation_level)
            store = metrics.MeteredQueueStore(
                self.metrics,
                name,
                self.databases[resolved.url],
                resolved.table,
                retention_time=resolved.retention_time,
                fair=resolved.fair,
                lock=resolved.acquire_lock,
                policy=resolved.retry_policy(),
            )
            longpoll = metrics.MeteredLongPoll(
                self.metrics, name, store, self.run, settings.poll_check_interval
            )
            self.queues[name] = Queue(resolved, store, longpoll, Coalesced(store, self.run))
        stores = {name: queue.store for name, queue in self.queues.items()}
        self.gauges = QueueGauges(stores, settings.metrics_count_limit)
        self.metrics.registry.register(self.gauges)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a worker thread (its wait for the thread measured)."""
        asked = time.perf_counter()

        def started() -> T:
            self.metrics.thread_wait.observe(time.perf_counter() - asked)
            return fn(*args)

        return await anyio.to_thread.run_sync(started, limiter=self.limiter)

    def begin_shutdown(self) -> None:
        """Readiness fails and every waiting long-poll returns empty, at once."""
        self.draining = True
        for queue in self.queues.values():
            queue.longpoll.close()

    async def cleanup_forever(self) -> None:
        """Delete expired finished rows in bounded batches, off the request path."""
        batch = self.settings.cleanup_batch
        while True:
            await asyncio.sleep(self.settings.cleanup_interval * random.uniform(0.5, 1.5))
            for queue in self.queues.values():
                try:
                    while await self.run(queue.store.cleanup, batch) == batch:
                        await asyncio.sleep(0.05)
                except PerfectQueueError as exc:
                    log.warning("cleanup of queue %s failed: %s", queue.settings.name, exc)


def create_app(settings: Settings) -> FastAPI:
    """A new app serving the queues of ``settings``."""
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        runtime.loop = asyncio.get_running_loop()
        for queue in runtime.queues.values():
            if settings.auto_init or (settings.auto_init is None and queue.store.db.is_sqlite):
                await runtime.run(queue.store.init)
        cleanup = asyncio.create_task(runtime.cleanup_forever())
        counts = asyncio.create_task(throughput.flush_forever(runtime.run))
        try:
            yield
        finally:
            runtime.begin_shutdown()
            cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleanup
            await throughput.stop(counts, runtime.run)
            for db in runtime.databases.values():
                db.dispose()

    app = FastAPI(
        title="PerfectQueue",
        version=__version__,
        summary="A highly available, at-least-once task queue on a relational database.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    problems.install(app)
    # the innermost: what reaches the hot endpoints' short path has passed every check above it
    app.add_middleware(FastLane, routes=routes.router.routes, runtime=runtime)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Authentication, keys=settings.api_keys)  # no key, no body read
    # the outermost: every answer has a request id, a log line and its metrics
    app.add_middleware(RequestLog, metrics=HttpMetrics(runtime.metrics))
    app.add_route(
        "/metrics", metrics.endpoint(runtime.run, runtime.metrics), ["GET"], include_in_schema=False
    )
    app.include_router(routes.health)
    app.include_router(routes.router)
    throughput = ui.install(app, runtime)
    return app
