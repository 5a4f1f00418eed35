"""Helpers for the worker tests (no tests here): a worker module, worker processes, waiting.

The worker module written into ``tmp_path`` appends lines to a ledger file (O_APPEND, one
``write`` per line, so lines of concurrent processes never mix): ``start KEY PID LABEL`` when a
task starts, ``end KEY PID LABEL`` when it is done; LABEL is the ``label`` key of the worker's
configuration (to see a reload take effect).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

WORKER_MODULE = '''
import os, re, signal, time
from perfectqueue.worker import Base, Dispatch


def note(task, word):
    line = f"{word} {task.key} {os.getpid()} {task.config.get('label', '-')}\\n"
    fd = os.open(task.data["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Quick(Base):
    def run(self):
        note(self.task, "start")
        note(self.task, "end")
        self.task.finish()


class Slow(Base):
    """Works data['sleep'] seconds in small steps, giving up when the task is cancelled."""

    def run(self):
        note(self.task, "start")
        deadline = time.monotonic() + self.task.data.get("sleep", 3)
        while time.monotonic() < deadline:
            if self.task.cancelled.is_set():
                note(self.task, "cancelled")
                return
            time.sleep(0.05)
        note(self.task, "end")


class Freeze(Base):
    """Stops its own process on the first delivery (marker file absent)."""

    def run(self):
        note(self.task, "start")
        marker = self.task.data["marker"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGSTOP)
        note(self.task, "end")


class Dispatcher(Dispatch):
    pass


Dispatcher.route("quick", Quick)
Dispatcher.route(re.compile(r"^slow"), "Slow")
Dispatcher.route("freeze", "Freeze")
'''


def write_worker(tmp_path: Path) -> Path:
    path = tmp_path / "pqworker.py"
    path.write_text(WORKER_MODULE)
    return path


def write_worker_config(path: Path, base: str, **settings: Any) -> Path:
    config = {
        "url": base,
        "queue": "q",
        "poll_interval": 0.3,
        "child_heartbeat_interval": 0.5,
        "child_kill_interval": 0.5,
        "child_fork_frequency_limit": 0.5,
        "task_heartbeat_interval": 1,
        "label": "one",
        **settings,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def worker_process(
    tmp_path: Path, config: Path, log: Path, extra: tuple[str, ...] = (), app: str = "pqworker:Dispatcher"
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m perfectqueue run APP [EXTRA…]``; killed (group and all) on leaving. The default
    application is written into ``tmp_path`` here; another must already be there."""
    if app == "pqworker:Dispatcher":
        write_worker(tmp_path)
    out = open(log, "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "perfectqueue",
            "run",
            app,
            "-I",
            str(tmp_path),
            "-c",
            str(config),
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        kill_group(proc.pid)
        proc.wait()
        out.close()


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_for(condition: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def ledger(path: Path) -> list[list[str]]:
    """The ledger's lines, split into words."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def events(path: Path, word: str, key: str | None = None) -> list[list[str]]:
    return [line for line in ledger(path) if line[0] == word and (key is None or line[1] == key)]


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found
