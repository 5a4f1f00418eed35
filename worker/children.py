"""The supervisor's handle on one child: a forked process, or a thread (``processor_type``).

Both answer the same questions for the supervisor's loop: is it alive (``reap``), when did it
last send a heartbeat (``last_beat``), and stop it (``start_killing`` then ``try_join``, which
repeats the stop every ``child_kill_interval``). Stops come in three strengths:

- ``graceful``: SIGTERM (finish the task in hand, take no more), escalated to SIGKILL after
  ``child_graceful_kill_limit`` when that is set;
- ``immediate``: SIGQUIT (release the task in hand, exit), SIGKILL if still there at the next
  repeat;
- ``kill``: SIGKILL at once (a frozen child: its task comes back when its lease expires).

A thread cannot be killed: its "signals" are recorded into its processor's :class:`Signals`,
and a thread told to stop immediately (or found frozen) is abandoned once its task is released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from . import logs
from .signals import CHILD_IGNORED, CHILD_SIGNALS, Signals, name

log = logging.getLogger("perfectqueue.worker")
STRENGTH = {"graceful": 1, "immediate": 2, "kill": 3}
ChildMain = Callable[[Signals, Callable[[], None], Callable[[], None]], None]
"""Runs a processor: (its signals, heartbeat callback, immediate-stop callback)."""


class Child:
    def __init__(self, kill_interval: float, graceful_kill_limit: float | None) -> None:
        self.kill_interval, self.graceful_kill_limit = kill_interval, graceful_kill_limit
        self.last_beat = time.monotonic()
        self.killing: str | None = None
        self._kill_started = self._last_kill = 0.0

    def start_killing(self, mode: str) -> None:
        if self.killing is not None and STRENGTH[mode] <= STRENGTH[self.killing]:
            return
        escalation = self.killing is not None
        self.killing = mode
        self._last_kill = time.monotonic()
        if not escalation:
            self._kill_started = self._last_kill
        self._signal(self._first_signal(mode))

    def try_join(self) -> bool:
        """True when the child is gone; else repeat the stop signal when it is due."""
        if self.reap():
            return True
        now = time.monotonic()
        if self.killing is not None and now - self._last_kill >= self.kill_interval:
            self._last_kill = now
            self._signal(self._repeat_signal(now))
        return False

    def _first_signal(self, mode: str) -> int:
        return {"graceful": signal.SIGTERM, "immediate": signal.SIGQUIT}.get(mode, signal.SIGKILL)

    def _repeat_signal(self, now: float) -> int:
        limit = self.graceful_kill_limit
        if self.killing == "graceful" and not (limit is not None and now - self._kill_started >= limit):
            return signal.SIGTERM
        return signal.SIGKILL

    def reap(self) -> bool:
        raise NotImplementedError

    def read_beats(self) -> None:
        """Take the heartbeats that arrived (updating :attr:`last_beat`)."""

    def describe_exit(self) -> str:
        raise NotImplementedError

    def _signal(self, signum: int) -> None:
        raise NotImplementedError

    def send(self, signum: int) -> None:
        self._signal(signum)


class ForkedChild(Child):
    """A forked process; heartbeats arrive as bytes on a pipe."""

    open_fds: set[int] = set()
    """Pipe ends the supervisor holds; a new child closes those of its siblings."""

    def __init__(self, main: ChildMain, kill_interval: float, graceful_kill_limit: float | None) -> None:
        super().__init__(kill_interval, graceful_kill_limit)
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            _child(main, read_fd, write_fd)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.read_fd = read_fd
        ForkedChild.open_fds.add(read_fd)
        self.status: int | None = None

    def __str__(self) -> str:
        return f"pid={self.pid}"

    def read_beats(self) -> None:
        try:
            if os.read(self.read_fd, 4096):
                self.last_beat = time.monotonic()
        except BlockingIOError:
            pass

    def reap(self) -> bool:
        if self.status is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return False
        self.status = status
        ForkedChild.open_fds.discard(self.read_fd)
        os.close(self.read_fd)
        return True

    def describe_exit(self) -> str:
        status = self.status or 0
        if os.WIFSIGNALED(status):
            return f"killed by {name(os.WTERMSIG(status))}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"

    def _signal(self, signum: int) -> None:
        if self.status is None:
            log.debug("sending %s to child %s", name(signum), self)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


def _child(main: ChildMain, read_fd: int, write_fd: int) -> None:
    """The forked side: never returns."""
    code = 1
    try:
        os.close(read_fd)
        for fd in ForkedChild.open_fds:
            os.close(fd)
        ForkedChild.open_fds.clear()
        parent = os.getppid()

        def beat() -> None:
            if os.getppid() != parent:
                raise BrokenPipeError("the supervisor exited")
            os.write(write_fd, b".")

        signals = Signals()
        signals.install(CHILD_SIGNALS, CHILD_IGNORED)
        main(signals, beat, _exit_now)
        code = 0
    except BaseException:
        log.exception("processor crashed")
    finally:
        logging.shutdown()
        os._exit(code)


def _exit_now() -> None:
    logs.flush()
    os._exit(0)


class ThreadChild(Child):
    """A thread of the supervisor's process; its signals are recorded, not sent."""

    def __init__(self, main: ChildMain, kill_interval: float, graceful_kill_limit: float | None) -> None:
        super().__init__(kill_interval, graceful_kill_limit)
        self.signals = Signals()
        self.abandoned = threading.Event()
        self.thread = threading.Thread(
            target=main, args=(self.signals, self._beat, self.abandoned.set), daemon=True
        )
        self.thread.start()
        self.status: int | None = None

    def __str__(self) -> str:
        return f"thread={self.thread.name}"

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def read_beats(self) -> None:
        pass

    def reap(self) -> bool:
        return not self.thread.is_alive() or self.abandoned.is_set()

    def describe_exit(self) -> str:
        return "abandoned" if self.abandoned.is_set() else "thread ended"

    def _signal(self, signum: int) -> None:
        if signum == signal.SIGKILL:
            signum = signal.SIGQUIT  # the closest a thread gets: release the task, abandon the thread
        self.signals.record(signum)
