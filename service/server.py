"""Running the app under uvicorn, with a graceful stop that load balancers and long-polls can see.

The first SIGTERM (or SIGINT) starts the stop, all within ``shutdown_grace`` seconds:

1. at once: ``/readyz`` answers 503, every waiting long-poll returns empty and new polls do not
   wait; the port stays open, so requests keep being answered;
2. once the requests that were in flight at the signal have finished, and ``shutdown_delay``
   seconds have passed (time for load balancers to see the 503), the port closes;
3. uvicorn waits for what is still open, up to what is left of the grace, cancels the rest,
   and the app shuts down (connections closed): the process exits with status 0;
4. a process still there a second after the grace (a thread stuck in a database call holds the
   interpreter's exit) leaves at once, status 0.

A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from ..configfile import ignored_line
from . import logs
from .app import create_app
from .config import Settings
from .connections import ConnectionLimits, guarded_protocol
from .runtime import Runtime
from .security import check_exposure
from .store import redact

log = logging.getLogger("perfectqueue.service")


HARD_STOP_MARGIN = 1.0


def hard_stop() -> None:
    """Still here after the grace (a database call that does not return holds the exit: a thread
    cannot be cancelled): leave without it. Its transaction dies with the connection."""
    log.error("stopping: still running %.0f s after the grace; leaving now", HARD_STOP_MARGIN)
    logging.shutdown()
    os._exit(0)


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime, grace: float, delay: float) -> None:
        super().__init__(config)
        self.runtime, self.grace, self.delay = runtime, grace, delay
        self.stop_asked: float | None = None
        self.in_flight: set[asyncio.Task[None]] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_asked is not None:  # the second signal: stop now
            self.force_exit = True
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        self.stop_asked = time.monotonic()
        watchdog = threading.Timer(self.grace + HARD_STOP_MARGIN, hard_stop)
        watchdog.daemon = True  # a normal exit does not wait for it
        watchdog.start()
        self.runtime.draining = True
        if self.runtime.loop is not None:
            self.runtime.loop.call_soon_threadsafe(self.runtime.begin_shutdown)

    async def on_tick(self, counter: int) -> bool:
        if self.stop_asked is not None and not self.should_exit:
            self.should_exit = self._drained()
        return await super().on_tick(counter)

    def _drained(self) -> bool:
        """Has every request that was open at the signal finished (and the delay passed)?"""
        assert self.stop_asked is not None
        if self.in_flight is None:
            self.in_flight = {task for task in self.server_state.tasks if not task.done()}
            log.info("stopping: %d requests in flight, grace %.0f s", len(self.in_flight), self.grace)
        self.in_flight = {task for task in self.in_flight if not task.done()}
        elapsed = time.monotonic() - self.stop_asked
        if elapsed < self.grace and (self.in_flight or elapsed < self.delay):
            return False
        # what is left of the grace, for uvicorn to wait for requests that came in meanwhile
        self.config.timeout_graceful_shutdown = max(0, math.floor(self.grace - elapsed))
        return True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, but a stop asked for by a signal and completed is a normal exit (status 0):
        uvicorn raises the signal again afterwards, which kills the process with it (-15) or, for
        SIGINT, ends it with a KeyboardInterrupt traceback."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def prepare_logs(settings: Settings, log_level: str = "info") -> None:
    """Configure the log, then check the exposure: its ``--insecure`` warning is written in the
    configured ``log_format`` like every later line (a refusal raises before anything is bound)."""
    logs.configure(settings.log_format, log_level)
    check_exposure(settings)


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_head_bytes=settings.max_head_bytes,
        head_timeout=settings.head_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


def serve(settings: Settings, log_level: str = "info") -> None:
    """Serve until stopped by SIGTERM or SIGINT (refused on a public address without keys)."""
    prepare_logs(settings, log_level)
    app = create_app(settings)
    app.state.runtime.check()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=None,  # uvicorn's loggers propagate to the root handler logs.configure set
        access_log=False,  # the service writes its own access line (logs.RequestLog)
        timeout_graceful_shutdown=math.floor(settings.shutdown_grace),
        server_header=False,
        http=guarded_protocol(connection_limits(settings)),
        timeout_keep_alive=settings.keep_alive_timeout,
    )
    announce(settings)
    Server(config, app.state.runtime, settings.shutdown_grace, settings.shutdown_delay).run()


def announce(settings: Settings) -> None:
    """Say where the queues are stored and where to look: one line per database, one for the
    pages, and one for the original's keys the settings held that mean nothing here."""
    if settings.ignored:
        log.info("%s", ignored_line(settings.ignored))
    by_url: dict[str, list[str]] = {}
    for name in settings.queues:
        by_url.setdefault(redact(settings.queue(name).url), []).append(name)
    for url, names in by_url.items():
        log.info("queues %s on %s", ", ".join(names), url)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base = f"http://{host}:{settings.port}"
    docs = f", API docs {base}/docs" if settings.api_docs else ""
    log.info("dashboard %s/ui%s, metrics %s/metrics", base, docs, base)
