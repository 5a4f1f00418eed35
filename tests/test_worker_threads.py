"""The supervisor's loop driven in this process: thread processors, signals recorded by hand."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from test_worker_harness import wait_for

import perfectqueue
from perfectqueue.worker import Base, Dispatch, Signals, Supervisor
from perfectqueue.worker.polling import Poll

done: list[tuple[str, str]] = []


class Record(Base):
    def perform(self) -> None:
        if self.task.data.get("sleep"):
            time.sleep(self.task.data["sleep"])
        done.append((self.task.key, threading.current_thread().name))


class App(Dispatch):
    pass


App.route("record", Record)


@pytest.fixture
def supervisor_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    root = logging.getLogger()
    before = list(root.handlers)
    with caplog.at_level(logging.INFO, logger="perfectqueue.worker"):
        yield caplog
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()


def start(base: str, **settings: object) -> tuple[Supervisor, threading.Thread, list[int]]:
    config = {"url": base, "queue": "q", "processor_type": "thread", "poll_interval": 0.2, **settings}
    supervisor = Supervisor(App, lambda: config, perfectqueue.open, Signals())
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(supervisor.run()))
    thread.start()
    return supervisor, thread, codes


def test_thread_processors_drain_and_stop_on_a_recorded_term(
    service: str, supervisor_logs: pytest.LogCaptureFixture
) -> None:
    done.clear()
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        queue.submit_many([{"key": f"k{i}", "type": "record"} for i in range(20)])
        supervisor, thread, codes = start(
            service, processors=2, max_request_per_child=3, child_fork_frequency_limit=0.2
        )
        wait_for(lambda: len(done) >= 20, timeout=60, what="every task")
        supervisor.signals.record(signal.SIGTERM)
        thread.join(timeout=30)
        assert codes == [0]
        assert sorted(k for k, _ in done) == sorted(f"k{i}" for i in range(20))
        assert queue.stats().finished == 20
    starts = supervisor_logs.text.count("event=child_start")
    assert starts >= 7  # 20 tasks, 3 per child: children were recycled


def test_a_recorded_quit_releases_the_task_of_a_thread(
    service: str, supervisor_logs: pytest.LogCaptureFixture
) -> None:
    done.clear()
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        queue.submit("long", "record", {"sleep": 3})
        supervisor, thread, codes = start(service)
        wait_for(lambda: queue["long"].metadata().is_running(), what="the task to start")
        supervisor.signals.record(signal.SIGQUIT)
        thread.join(timeout=10)
        assert codes == [0]
        assert queue["long"].metadata().is_waiting()
    assert "event=release id=long" in supervisor_logs.text


def test_a_recorded_detach_of_threads_leaves_after_detach_wait_releasing_their_task(
    service: str, supervisor_logs: pytest.LogCaptureFixture
) -> None:
    done.clear()
    with perfectqueue.open({"url": service, "queue": "q"}) as queue:
        queue.submit("long", "record", {"sleep": 4})
        supervisor, thread, codes = start(service, detach_wait=0.5)
        wait_for(lambda: queue["long"].metadata().is_running(), what="the task to start")
        detached = time.monotonic()
        supervisor.signals.record(signal.SIGTTIN)
        thread.join(timeout=10)
        assert codes == [0]
        assert 0.4 <= time.monotonic() - detached < 3  # detach_wait, not the task's 4 s
        assert queue["long"].metadata().is_waiting()  # a thread cannot outlive its process: released
    assert "event=detach " in supervisor_logs.text
    assert "event=release id=long" in supervisor_logs.text


def test_an_abandoned_poll_releases_what_it_gets_and_closes_the_queue(service: str) -> None:
    queue = perfectqueue.open({"url": service, "queue": "q"})
    poll = Poll(queue, 1, 300, 5)
    poll.start()
    time.sleep(0.3)  # into its long-poll (were it not yet, it would find the task at once)
    assert poll.take() is None  # not answered: abandoned, as by a stop
    with perfectqueue.open({"url": service, "queue": "q"}) as other:
        other.submit("late", "record", {})
        assert poll.done.wait(10)  # the long-poll got the task…
        wait_for(lambda: other["late"].metadata().is_waiting(), what="the task to be released")
        assert other["late"].metadata().attempts == 0  # …and gave it back, its attempt with it
    wait_for(lambda: queue.backend.client.is_closed, what="the poll to close the queue")
