"""Several worker processes drain a queue: every task finished, and run exactly once."""

from __future__ import annotations

import signal
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import drop_table
from servers import running_service, write_config
from test_worker_harness import events, wait_for, worker_process, write_worker_config

import perfectqueue
from perfectqueue.service.store import Database

pytestmark = pytest.mark.slow
TASKS, WORKERS = 2000, 4


def test_four_workers_of_two_processors_drain_the_queue_exactly_once(
    tmp_path: Path, db_url: str, table_name: str
) -> None:
    book = tmp_path / "ledger"
    service_config = write_config(tmp_path / "service.yaml", db_url, table_name)
    try:
        with (
            running_service(service_config, tmp_path / "service.log") as base,
            perfectqueue.open({"url": base, "queue": "q"}) as queue,
        ):
            for start in range(0, TASKS, 1000):
                specs = [
                    {"key": f"t{i}", "type": "quick", "data": {"ledger": str(book)}}
                    for i in range(start, start + 1000)
                ]
                assert not queue.submit_many(specs).failed
            _drain(tmp_path, base, book)
            stats = queue.stats()
            assert (stats.waiting, stats.running, stats.finished) == (0, 0, TASKS)
    finally:
        if not db_url.startswith("sqlite"):
            db = Database(db_url)
            drop_table(db, table_name)
            db.dispose()
    ends = Counter(line[1] for line in events(book, "end"))
    assert len(ends) == TASKS
    assert set(ends.values()) == {1}
    assert len(events(book, "start")) == TASKS
    assert len({line[2] for line in events(book, "end")}) > 2  # spread over the children


def _drain(tmp_path: Path, base: str, book: Path) -> None:
    config = write_worker_config(tmp_path / "worker.yaml", base, processors=2, poll_interval=0.5)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(worker_process(tmp_path, config, tmp_path / f"worker-{n}.log"))
            for n in range(WORKERS)
        ]
        wait_for(lambda: len(events(book, "end")) >= TASKS, timeout=90, what="every task to be run")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=20) == 0
