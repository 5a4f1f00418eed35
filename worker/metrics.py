"""The worker's Prometheus metrics, served by the supervisor on ``metrics_port`` (off by default).

The children count; the supervisor adds up and serves. Before it starts any child, the supervisor
opens one pipe; every child — a forked process inherits the write end, a thread shares it — writes
a short line per event (``task finished 0.153``), and the supervisor reads them at each step of its
loop into a registry of its own, served by prometheus_client's HTTP server on a thread. A line is
one ``write`` under PIPE_BUF bytes, so lines of concurrent children never mix; the write end does
not block, so a supervisor that falls behind loses counts rather than holds up a task.

prometheus_client is imported only when ``metrics_port`` is set (``pip install
'perfectqueue[metrics]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("perfectqueue.worker")


class _Channel:
    fd: int | None = None
    """The pipe's write end, in the supervisor and its children; None: metrics are off."""


DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
COUNT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
FLUSH_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5)


def task_done(outcome: str, seconds: float) -> None:
    """A task left the child's hands: ``outcome`` (finish, retry, dead, release, cancelled, preempted,
    unsettled) after ``seconds``."""
    _send(f"task {outcome} {seconds:.6f}")


def task_failed() -> None:
    """A handler raised."""
    _send("failure")


def timed_out() -> None:
    """A handler ran over its time limit (its task was retried)."""
    _send("timeout")


def poll_failed() -> None:
    """A poll for tasks failed (the service or the network)."""
    _send("poll_error")


def polled(tasks: int) -> None:
    """A poll answered ``tasks`` tasks (at most 1 + ``task_prefetch``)."""
    _send(f"poll {tasks}")


def acks_sent(tasks: int, waited: float, seconds: float) -> None:
    """The acknowledger sent ``tasks`` finishes and retries: the oldest had waited ``waited``
    seconds to be sent, and the requests took ``seconds``."""
    _send(f"acks {tasks} {waited:.6f} {seconds:.6f}")


def _send(line: str) -> None:
    if _Channel.fd is not None:
        with contextlib.suppress(OSError):  # full (the supervisor is behind) or closed: drop it
            os.write(_Channel.fd, (line + "\n").encode())


class WorkerMetrics:
    """The supervisor's side: the registry, the HTTP server and the reading end of the pipe."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - counts only
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
        except ImportError:
            raise ConfigError(
                "metrics_port needs prometheus-client: pip install 'perfectqueue[metrics]'"
            ) from None

        self.registry = r = CollectorRegistry()
        self.tasks = Counter(
            "perfectqueue_worker_tasks", "Tasks handled, by outcome.", ["outcome"], registry=r
        )
        self.failures = Counter("perfectqueue_worker_task_failures", "Handlers that raised.", registry=r)
        self.durations = Histogram(
            "perfectqueue_worker_task_duration_seconds",
            "Seconds from a task's start to its outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.timeouts = Counter(
            "perfectqueue_worker_task_timeouts", "Handlers stopped over their time limit.", registry=r
        )
        self.poll_errors = Counter("perfectqueue_worker_poll_errors", "Polls that failed.", registry=r)
        self.poll_tasks = Histogram(
            "perfectqueue_worker_poll_tasks",
            "Tasks each poll brought: the prefetch depth (at most 1 + task_prefetch).",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.ack_batch = Histogram(
            "perfectqueue_worker_ack_batch_size",
            "Finishes and retries sent together by a child's acknowledger.",
            buckets=COUNT_BUCKETS,
            registry=r,
        )
        self.ack_wait = Histogram(
            "perfectqueue_worker_ack_wait_seconds",
            "Seconds the oldest acknowledgement of a batch waited to be sent (ack_delay at most when"
            " the service keeps up).",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.ack_flush = Histogram(
            "perfectqueue_worker_ack_flush_seconds",
            "Seconds the requests of one batch of acknowledgements took.",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "perfectqueue_worker_child_restarts",
            "Children replaced after they exited, by reason (crashed, frozen, recycled, restart).",
            ["reason"],
            registry=r,
        )
        self.children = Gauge("perfectqueue_worker_children", "Children running now.", registry=r)
        self.server: Any
        try:
            self.server, self.thread = start_http_server(port, host, registry=r)
        except OSError as exc:
            raise ConfigError(f"metrics_port {port}: cannot listen ({exc.strerror})") from None
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(write_fd, False)
        _Channel.fd = write_fd
        self._partial = b""
        log.info("metrics on http://%s:%d/metrics", host, port)

    def read(self) -> None:
        """Add up what the children sent since the last read."""
        data = self._partial
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_fd, 65536):
                data += chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._count(line.decode(errors="replace").split())

    def _count(self, words: list[str]) -> None:
        if words[:1] == ["task"] and len(words) == 3:
            self.tasks.labels(words[1]).inc()
            self.durations.labels(words[1]).observe(float(words[2]))
        elif words == ["failure"]:
            self.failures.inc()
        elif words == ["timeout"]:
            self.timeouts.inc()
        elif words == ["poll_error"]:
            self.poll_errors.inc()
        elif words[:1] == ["poll"] and len(words) == 2:
            self.poll_tasks.observe(int(words[1]))
        elif words[:1] == ["acks"] and len(words) == 4:
            self.ack_batch.observe(int(words[1]))
            self.ack_wait.observe(float(words[2]))
            self.ack_flush.observe(float(words[3]))

    def child_restarted(self, reason: str) -> None:
        self.restarts.labels(reason).inc()

    def close(self) -> None:
        self.read()
        self.server.shutdown()
        self.server.server_close()
        if _Channel.fd is not None:
            os.close(_Channel.fd)
            _Channel.fd = None
        os.close(self.read_fd)
