"""Crashes, freezes, long tasks and lost leases, with real processes and real kills."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_worker_harness import children_of, events, wait_for, worker_process, write_worker_config

import perfectqueue

pytestmark = pytest.mark.slow


def open_queue(base: str) -> perfectqueue.Queue:
    return perfectqueue.open({"url": base, "queue": "q"})


def test_a_killed_child_is_replaced_and_its_task_redelivered_after_the_lease(
    tmp_path: Path, service: str
) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(tmp_path / "worker.yaml", service, alive_time=2)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc, open_queue(service) as queue:
        queue.submit("t", "slow", {"ledger": str(book), "sleep": 1.5})
        first = wait_for(lambda: events(book, "start", "t"), what="the task to start")[0]
        os.kill(int(first[2]), signal.SIGKILL)
        done = wait_for(lambda: events(book, "end", "t"), timeout=30, what="the redelivered task")[0]
        assert done[2] != first[2]  # a replacement child ran it
        wait_for(lambda: queue["t"].metadata().is_finished(), what="the task to be finished")
        assert len(events(book, "start", "t")) == 2
        assert len(events(book, "end", "t")) == 1
        assert proc.poll() is None


def test_a_frozen_child_is_killed_and_replaced(tmp_path: Path, service: str) -> None:
    book, marker = tmp_path / "ledger", tmp_path / "froze"
    config = write_worker_config(tmp_path / "worker.yaml", service, alive_time=2, child_heartbeat_limit=2)
    with worker_process(tmp_path, config, tmp_path / "worker.log") as proc, open_queue(service) as queue:
        queue.submit("t", "freeze", {"ledger": str(book), "marker": str(marker)})
        first = wait_for(lambda: events(book, "start", "t"), what="the task to start")[0]
        frozen = int(first[2])
        wait_for(lambda: frozen not in children_of(proc.pid), timeout=10, what="the frozen child to go")
        done = wait_for(lambda: events(book, "end", "t"), timeout=20, what="the task, redelivered")[0]
        assert int(done[2]) != frozen
        wait_for(lambda: queue["t"].metadata().is_finished(), what="the task to be finished")
    assert "event=child_frozen" in (tmp_path / "worker.log").read_text()


def test_heartbeats_keep_a_long_task_leased_past_alive_time(tmp_path: Path, service: str) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(
        tmp_path / "worker.yaml", service, alive_time=2, task_heartbeat_interval=0.5, processors=2
    )
    with worker_process(tmp_path, config, tmp_path / "worker.log"), open_queue(service) as queue:
        queue.submit("long", "slow", {"ledger": str(book), "sleep": 5})
        wait_for(lambda: events(book, "end", "long"), timeout=30, what="the long task")
        wait_for(lambda: queue["long"].metadata().is_finished(), what="the task to be finished")
    assert len(events(book, "start", "long")) == 1  # never redelivered to the idle processor


def test_a_preempted_task_is_cancelled_and_never_finished_by_the_worker(tmp_path: Path, service: str) -> None:
    book = tmp_path / "ledger"
    config = write_worker_config(
        tmp_path / "worker.yaml", service, alive_time=1, task_heartbeat_interval=0.5, child_heartbeat_limit=60
    )
    with worker_process(tmp_path, config, tmp_path / "worker.log"), open_queue(service) as queue:
        queue.submit("t", "slow", {"ledger": str(book), "sleep": 30})
        child = int(wait_for(lambda: events(book, "start", "t"), what="the task to start")[0][2])
        os.kill(child, signal.SIGSTOP)  # no heartbeats: the lease runs out
        try:
            mine = wait_for(lambda: queue.poll(alive_time=60), timeout=10, what="the lease to expire")
        finally:
            os.kill(child, signal.SIGCONT)
        wait_for(lambda: events(book, "cancelled", "t"), timeout=10, what="the handler to be cancelled")
        assert queue["t"].metadata().is_running()  # the worker did not finish it
        mine.finish()  # the new lease is intact
    log = (tmp_path / "worker.log").read_text()
    assert "event=preempted id=t" in log
    assert not events(book, "end", "t")
