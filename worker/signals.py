"""Signals, recorded and nothing else: the loops of the supervisor and the processors act on them.

A handler installed by :meth:`Signals.install` appends the signal number to a queue and wakes
whoever waits; the supervisor's loop and a processor's monitor thread :meth:`take` what arrived
and decide. A test can :meth:`record` a signal by hand and step a loop without a real signal, and
a thread processor receives its supervisor's "signals" the same way.
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Iterable
from types import FrameType

SUPERVISOR_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGHUP,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGTTIN,
)
CHILD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR2, signal.SIGTTIN)
CHILD_IGNORED = (signal.SIGUSR1, signal.SIGHUP, signal.SIGWINCH)
"""A child leaves restarts and binary replaces to its supervisor (a shell's ``kill -HUP -PGID``
reaches every process of the group)."""


class Signals:
    """The signals that arrived and were not taken yet, in order."""

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._wake = threading.Event()

    def record(self, signum: int, _frame: FrameType | None = None) -> None:
        """Note ``signum`` (this is the signal handler itself) and wake the waiting loop."""
        self._pending.append(signum)
        self._wake.set()

    def take(self) -> list[int]:
        """The signals recorded since the last call, oldest first."""
        self._wake.clear()
        taken: list[int] = []
        while self._pending:
            taken.append(self._pending.popleft())
        return taken

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, returning early (True) when a signal is recorded."""
        return self._wake.wait(max(0.0, timeout))

    def wake(self) -> None:
        """Wake the waiting loop without a signal (e.g. a stop requested from another thread)."""
        self._wake.set()

    def install(self, signums: Iterable[int], ignored: Iterable[int] = ()) -> None:
        """Route ``signums`` to :meth:`record` in this process; ignore ``ignored``."""
        for signum in signums:
            signal.signal(signum, self.record)
        for signum in ignored:
            signal.signal(signum, signal.SIG_IGN)


def reset(signums: Iterable[int]) -> None:
    """Give ``signums`` back their default action (in a forked child, before it installs its own)."""
    for signum in signums:
        signal.signal(signum, signal.SIG_DFL)


def name(signum: int) -> str:
    return signal.Signals(signum).name
