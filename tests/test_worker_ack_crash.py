"""A crash between a handler's return and the flush of its finish loses nothing: the task is
still leased, and comes back after its lease (at-least-once). A stop, graceful or immediate,
sends what was finished before the process ends. Real processes, real kills; ``ack_delay`` is
made long so that the finish is surely still waiting when the kill comes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from test_worker_harness import events, kill_group, wait_for, worker_process, write_worker_config
from test_worker_lifecycle import queue  # noqa: F401 - the fixture

import perfectqueue

pytestmark = pytest.mark.slow
HELD = {"ack_delay": 30, "alive_time": 2}
"""A finish waits up to 30 s to be sent; a lease lasts 2 s."""


def test_a_kill_before_the_flush_leaves_the_task_leased_and_it_is_delivered_again(
    tmp_path: Path,
    service: str,
    queue: perfectqueue.Queue,  # noqa: F811
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "held.yaml", service, **HELD)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        queue.submit("t", "quick", {"ledger": str(book)})
        wait_for(lambda: events(book, "end", "t"), what="the handler to return")
        kill_group(proc.pid)  # supervisor and child, before the finish was sent
        proc.wait()
    assert queue["t"].metadata().is_running()  # not finished, still leased: nothing was told
    config = write_worker_config(tmp_path / "worker.yaml", service, alive_time=2)
    with worker_process(tmp_path, config, tmp_path / "worker2.log"):
        wait_for(lambda: queue["t"].metadata().is_finished(), what="the task, delivered again")
    assert len(events(book, "end", "t")) == 2  # run again: at-least-once
    assert queue["t"].metadata().attempts == 2


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGQUIT], ids=["graceful", "immediate"])
def test_a_stop_sends_the_finishes_waiting_to_be_sent(
    tmp_path: Path,
    service: str,
    queue: perfectqueue.Queue,  # noqa: F811
    stop: signal.Signals,
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "held.yaml", service, **HELD)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc:
        queue.submit_many(
            [{"key": f"t{i}", "type": "quick", "data": {"ledger": str(book)}} for i in range(3)]
        )
        wait_for(lambda: len(events(book, "end")) == 3, what="the handlers to return")
        assert queue.stats().finished == 0  # waiting for ack_delay
        stopped = time.monotonic()
        proc.send_signal(stop)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - stopped < 10  # not the 30 s of ack_delay
    assert queue.stats().finished == 3
    assert len(events(book, "start")) == 3
