"""Running the app under uvicorn, with long-polls released the moment a stop is asked for."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import FrameType

import uvicorn

from .app import Runtime, create_app
from .config import Settings
from .security import check_exposure

log = logging.getLogger("perfectqueue.service")


class Server(uvicorn.Server):
    """uvicorn waits for open requests before it runs the app's shutdown; a long-poll would hold
    the stop for its whole wait, so the first stop signal also releases every waiting poll."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.draining = True
        if self.runtime.loop is not None:
            self.runtime.loop.call_soon_threadsafe(self.runtime.begin_shutdown)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, but a stop asked for by a signal and completed is a normal exit (status 0):
        uvicorn raises the signal again afterwards, which kills the process with it (-15) or, for
        SIGINT, ends it with a KeyboardInterrupt traceback."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def serve(settings: Settings, log_level: str = "info") -> None:
    """Serve until stopped by SIGTERM or SIGINT (refused on a public address without keys)."""
    check_exposure(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace),
        server_header=False,
    )
    Server(config, app.state.runtime).run()
