"""The supervisor: keeps ``processors`` children running and acts on the signal table.

| signal  | action |
| ------- | ------ |
| TERM, INT | graceful shutdown: children finish the task in hand and exit; a second one escalates |
| QUIT    | immediate shutdown: children release the task in hand and exit |
| USR1    | graceful restart: reload the configuration, replace children gracefully |
| HUP     | immediate restart: reload the configuration, replace children immediately |
| USR2    | reopen the log file (here and in every child) |
| WINCH   | immediate binary replace: start the same command line again, stop immediately |
| CONT    | graceful binary replace, with ``replace_on_cont`` (else nothing: shells send CONT) |
| TTIN    | detach (live restart): stop gracefully, and exit after ``detach_wait`` at most, leaving |
|         | forked children to finish their task on their own so a new worker can start meanwhile |

Signal handlers only record (:mod:`.signals`); :meth:`Supervisor.step` acts, so a test can drive
it. Each step also reads the children's heartbeats, kills a child silent for longer than
``child_heartbeat_limit``, reaps children that exited and forks replacements (at most one per
``child_fork_frequency_limit`` seconds per processor after an unplanned exit).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import PerfectQueueError
from . import logs
from .application import Base
from .aprocessor import AsyncProcessor
from .children import Child, ChildMain, ForkedChild, ThreadChild
from .config import WorkerConfig
from .metrics import WorkerMetrics
from .processor import OpenQueue, Processor
from .signals import SUPERVISOR_SIGNALS, Signals, name

log = logging.getLogger("perfectqueue.worker")
TICK = 0.1
ConfigLoader = Callable[[], Mapping[str, Any]]
ACTIONS: dict[int, tuple[str, str]] = {
    signal.SIGTERM: ("stop", "graceful"),
    signal.SIGINT: ("stop", "graceful"),
    signal.SIGQUIT: ("stop", "immediate"),
    signal.SIGUSR1: ("restart", "graceful"),
    signal.SIGHUP: ("restart", "immediate"),
    signal.SIGWINCH: ("replace", "immediate"),
    signal.SIGCONT: ("replace", "graceful"),
    signal.SIGTTIN: ("detach", "graceful"),
}


class Slot:
    """One processor number: its current child, and when a child was last started for it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.child: Child | None = None
        self.last_start = float("-inf")
        self.retiring = False


class Supervisor:
    def __init__(
        self, application: type[Base], loader: ConfigLoader, open_queue: OpenQueue, signals: Signals
    ) -> None:
        self.application, self.loader, self.open_queue = application, loader, open_queue
        self.signals = signals
        self.config = self._load()
        port = self.config.metrics_port  # read once: a restart does not move the metrics
        self.metrics = WorkerMetrics(port) if port else None
        self.slots = [Slot(n) for n in range(1, self.config.processors + 1)]
        self.stopping: str | None = None
        self.replaced_pid: int | None = None
        self.detach_deadline: float | None = None

    def run(self) -> int:
        """Run until stopped (or detached); 0 after a clean stop."""
        log.info("%s", logs.fields(event="supervisor_start", application=self.application.__name__))
        try:
            while True:
                self.step()
                if self.finished:
                    break  # at once: the children's exits were just reaped
                if self.detached:
                    self._leave_children()
                    break
                self.signals.wait(TICK)
        finally:
            self._abort()
            if self.metrics is not None:
                self.metrics.close()
        log.info("%s", logs.fields(event="supervisor_exit"))
        return 0

    @property
    def finished(self) -> bool:
        return self.stopping is not None and all(slot.child is None for slot in self.slots)

    @property
    def detached(self) -> bool:
        """Detaching, and ``detach_wait`` is over: the supervisor leaves its children behind."""
        if self.detach_deadline is None or self.stopping == "immediate":
            return False  # an immediate stop during the wait is seen through to the end
        return time.monotonic() >= self.detach_deadline

    def step(self) -> None:
        for signum in self.signals.take():
            self.handle(signum)
        for slot in self.slots:
            self._keepalive(slot)
        self.slots = [s for s in self.slots if not (s.retiring and s.child is None)]
        if self.metrics is not None:
            self.metrics.read()
            self.metrics.children.set(sum(slot.child is not None for slot in self.slots))

    def handle(self, signum: int) -> None:
        log.info("%s", logs.fields(event="signal", signal=name(signum)))
        if signum == signal.SIGUSR2:
            self._logrotate()
            return
        if signum == signal.SIGCONT and not self.config.replace_on_cont:
            return  # a shell's `fg` or `timeout` sends CONT: a replace only when asked for
        action, mode = ACTIONS[signum]
        if action == "stop":
            self.stop(mode)
        elif action == "restart":
            self.restart(mode)
        elif action == "detach":
            self.detach()
        else:
            self.replace(mode)

    def stop(self, mode: str) -> None:
        if self.stopping == "graceful" and mode == "graceful":
            mode = "immediate"  # a second graceful stop escalates
        self.stopping = mode
        for slot in self.slots:
            if slot.child is not None:
                slot.child.start_killing(mode)

    def detach(self) -> None:
        """Stop gracefully, and leave after ``detach_wait`` even if children are still working.

        Forked children are told (SIGTTIN) that they are detached: they finish their task in hand
        and exit, and no longer stop when their supervisor is gone. The process that started the
        worker ends within ``detach_wait``, so a new worker can be started while they finish.
        """
        if self.detach_deadline is not None or self.stopping == "immediate":
            return
        self.detach_deadline = time.monotonic() + self.config.detach_wait
        log.info("%s", logs.fields(event="detach", wait=self.config.detach_wait))
        for slot in self.slots:
            if slot.child is not None:
                slot.child.send(signal.SIGTTIN)
        if self.stopping is None:
            self.stop("graceful")

    def restart(self, mode: str) -> None:
        if self.stopping:
            return
        try:
            self.config = self._load()
        except Exception as exc:
            log.error("%s", logs.fields(event="restart_failed", error=f"{type(exc).__name__}: {exc}"))
            return
        self._resize(self.config.processors, mode)
        for slot in self.slots:
            slot.last_start = float("-inf")  # a planned restart is not a crash loop
            if slot.child is not None:
                slot.child.start_killing(mode)

    def replace(self, mode: str) -> None:
        if self.stopping or self.replaced_pid is not None:
            return
        argv = list(sys.orig_argv)
        self.replaced_pid = os.posix_spawn(sys.executable, argv, dict(os.environ))
        log.info("%s", logs.fields(event="replaced", pid=self.replaced_pid, command=" ".join(argv)))
        self.stop(mode)

    def _load(self) -> WorkerConfig:
        config = WorkerConfig.from_mapping(self.loader())
        logs.configure(config.log, config.log_format)
        self.open_queue(config.backend).close()  # a bad backend setting fails here, not in a child
        return config

    def _resize(self, count: int, mode: str) -> None:
        active = [s for s in self.slots if not s.retiring]
        for slot in active[count:]:
            slot.retiring = True
            if slot.child is not None:
                slot.child.start_killing(mode)
        self.slots += [Slot(n) for n in range(len(active) + 1, count + 1)]

    def _keepalive(self, slot: Slot) -> None:
        child = slot.child
        if child is not None:
            self._watch(slot, child)
        idle = slot.child is None and not (self.stopping or slot.retiring)
        if idle and time.monotonic() - slot.last_start >= self.config.child_fork_frequency_limit:
            self._start(slot)

    def _watch(self, slot: Slot, child: Child) -> None:
        child.read_beats()
        silent = time.monotonic() - child.last_beat
        if child.killing in (None, "graceful") and silent > self.config.child_heartbeat_limit:
            log.error(
                "%s", logs.fields(event="child_frozen", processor=slot.number, child=child, silent=silent)
            )
            child.start_killing("kill")
        if child.try_join():
            level = logging.INFO if child.killing or slot.retiring else logging.ERROR
            log.log(level, "%s", logs.fields(event="child_exit", child=child, how=child.describe_exit()))
            slot.child = None
            if self.metrics is not None and not (self.stopping or slot.retiring):
                self.metrics.child_restarted(restart_reason(child))

    def _start(self, slot: Slot) -> None:
        config = self.config
        kind = ThreadChild if config.processor_type == "thread" else ForkedChild
        logs.flush()
        try:
            slot.child = kind(
                self._child_main(config), config.child_kill_interval, config.child_graceful_kill_limit
            )
        except OSError as exc:
            log.error("%s", logs.fields(event="fork_failed", processor=slot.number, error=exc))
        slot.last_start = time.monotonic()
        if slot.child is not None:
            log.info("%s", logs.fields(event="child_start", processor=slot.number, child=slot.child))

    def _child_main(self, config: WorkerConfig) -> ChildMain:
        def main(signals: Signals, beat: Callable[[], None], on_immediate_stop: Callable[[], None]) -> None:
            kind = AsyncProcessor if config.processor_type == "asyncio" else Processor
            processor = kind(
                self.application,
                config,
                self.open_queue,
                signals=signals,
                child_heartbeat=beat,
                on_immediate_stop=on_immediate_stop,
            )
            processor.run()

        return main

    def _logrotate(self) -> None:
        logs.reopen()
        for slot in self.slots:
            if slot.child is not None:
                slot.child.send(signal.SIGUSR2)

    def _leave_children(self) -> None:
        """Detached: forked children carry on alone; threads cannot, so their tasks are released."""
        for slot in self.slots:
            child = slot.child
            if isinstance(child, ForkedChild):
                log.info("%s", logs.fields(event="detached", processor=slot.number, child=child))
                slot.child = None

    def _abort(self) -> None:
        """Leaving abnormally (an exception in the loop): stop the children immediately."""
        if self.finished:
            return
        self.stop("immediate")
        deadline = time.monotonic() + 2 * self.config.child_kill_interval + 1
        while not self.finished and time.monotonic() < deadline:
            for slot in self.slots:
                if slot.child is not None and slot.child.try_join():
                    slot.child = None
            time.sleep(TICK)


def restart_reason(child: Child) -> str:
    """Why a child that is replaced exited: frozen (killed for silence), restart (USR1/HUP),
    recycled (it ended normally, e.g. after max_request_per_child), or crashed."""
    if child.killing == "kill":
        return "frozen"
    if child.killing is not None:
        return "restart"
    status = getattr(child, "status", None)
    return "recycled" if status is None or os.waitstatus_to_exitcode(status) == 0 else "crashed"


def run(application: type[Base], loader: ConfigLoader, open_queue: OpenQueue | None = None) -> int:
    """Run a worker: ``application`` (a Dispatch subclass) with the configuration from ``loader``.

    ``loader()`` is called at start and again on every restart (USR1/HUP).
    """
    if open_queue is None:
        from ..client import open as open_client

        open_queue = open_client
    signals = Signals()
    signals.install(SUPERVISOR_SIGNALS)
    try:
        supervisor = Supervisor(application, loader, open_queue, signals)
    except PerfectQueueError as exc:
        log.error("%s", logs.fields(event="config_error", error=exc))
        raise
    return supervisor.run()
