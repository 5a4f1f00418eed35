"""Real service processes for tests: ``perfectqueue serve`` on a free port, stopped after."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

PORTS_PER_WORKER = 2000
FIRST_PORT = 10000  # below Linux's ephemeral ports (32768 and up), where bind(0) and clients draw
_given: set[int] = set()


def free_port() -> int:
    """A port nothing listens on. Under pytest-xdist each worker draws from a range of its own
    (``gw0`` from 10000, ``gw1`` from 12000, ...), never handing out a port twice: a port that
    one worker found free could otherwise be taken by another worker's service before its own
    binds it, or be one a test relies on nothing listening on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    start = FIRST_PORT + int(worker[2:]) * PORTS_PER_WORKER
    for port in random.sample(range(start, start + PORTS_PER_WORKER), PORTS_PER_WORKER):
        if port in _given:
            continue
        _given.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port left in {start}-{start + PORTS_PER_WORKER - 1}")


def write_config(path: Path, url: str, table: str, **settings: Any) -> Path:
    """A settings file serving one queue named ``q`` on ``table``."""
    config = {"url": url, "queues": {"q": {"table": table}}, "auto_init": True, **settings}
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_service(config: Path, log: Path | None = None) -> Iterator[str]:
    """Start a service process with ``config``; yield its base url once it is ready."""
    with service_process(config, log) as (base, _proc):
        yield base


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("service did not become ready")


SERVE = [sys.executable, "-m", "perfectqueue", "serve"]


@contextmanager
def service_process(
    config: Path, log: Path | None = None, port: int | None = None, args: Sequence[str] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``perfectqueue serve`` process (on ``port``, or a free one, with more ``args``); its
    base url once it is ready, and the process, for tests that signal it themselves.

    On leaving, a process still running gets SIGTERM (then SIGKILL after 30 s).
    """
    port = port or free_port()
    with open(log or os.devnull, "ab") as out:
        proc = subprocess.Popen(
            [*SERVE, "-c", str(config), "--port", str(port), "--log-level", "warning", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def running_services(config: Path, logs: Path, count: int = 2) -> Iterator[list[str]]:
    """``count`` service processes (replicas) serving the same queue; their base urls."""
    with ExitStack() as stack:
        yield [stack.enter_context(running_service(config, logs / f"service-{i}.log")) for i in range(count)]
