"""Real service processes for tests: ``perfectqueue serve`` on a free port, stopped after."""

from __future__ import annotations

import os
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
