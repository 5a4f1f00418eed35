"""Faults under load (CONTRACT.md §4): the database goes away, a replica dies, deadlocks.

The database that is killed is always one of the test's own (:mod:`mariadb_instance`,
:mod:`postgres_instance`), never the machine's shared server. Clients are the real SDK with its
retries; what they were told is the record: every submit that returned success must end
finished, and a task the SDK was told is finished must never be delivered again. See
docs/faults.md.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import require_server
from postgres_instance import PostgreSQL
from private_servers import PrivateServer, mariadb, postgres, private_db  # noqa: F401 - the fixtures
from servers import free_port, service_process, write_config
from test_worker_harness import wait_for

import perfectqueue
from perfectqueue.errors import (
    AlreadyExistsError,
    AlreadyFinishedError,
    PerfectQueueError,
    PreemptedError,
    UnavailableError,
)

pytestmark = pytest.mark.slow


class Record:
    """What the SDK told the clients, shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: set[str] = set()
        self.finished: Counter[str] = Counter()
        self.redelivered: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def note_error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{type(exc).__name__}: {exc}")


def producer(base: str, record: Record, stop: threading.Event, limit: int) -> None:
    """Submit ``t0``, ``t1``… until stopped; a submit that succeeds is acknowledged."""
    with perfectqueue.open({"url": base, "queue": "q", "retries": 3}) as queue:
        i = 0
        while not stop.is_set() and i < limit:
            key = f"t{i}"
            try:
                queue.submit(key, "t", {})
            except AlreadyExistsError:
                pass  # an earlier try that timed out was stored after all
            except UnavailableError:
                continue  # not acknowledged: try the same id again
            except PerfectQueueError as exc:
                record.note_error(exc)
            with record.lock:
                record.acked.add(key)
            i += 1


def consumer(base: str, record: Record) -> None:
    """Poll and finish until stopped; note any delivery of a task already reported finished."""
    with perfectqueue.open({"url": base, "queue": "q", "retries": 10}) as queue:
        while not record.stop.is_set():
            with record.lock:  # finished before the poll was sent: must not come back in it
                finished_before = set(record.finished)
            try:
                tasks = queue.poll_multi(max=5, alive_time=2, wait=0.5)
            except UnavailableError:
                continue
            except PerfectQueueError as exc:
                record.note_error(exc)
                continue
            with record.lock:
                record.redelivered.extend(task.key for task in tasks if task.key in finished_before)
            for task in tasks:
                try:
                    task.finish()
                except AlreadyFinishedError:
                    pass  # the answer to a retried finish whose first answer was lost
                except UnavailableError:
                    continue  # unknown: delivered again after the lease, or found finished
                except PreemptedError:
                    continue  # fenced: the lease ran out while the replica was down, another took it
                except PerfectQueueError as exc:
                    record.note_error(exc)
                    continue
                with record.lock:
                    record.finished[task.key] += 1


def start_threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    return threads


def stop_threads(record: Record, threads: list[threading.Thread]) -> None:
    record.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client thread did not stop"


def count(record: Record, what: str) -> int:
    with record.lock:
        return len(getattr(record, what))


def all_acked_finished(record: Record) -> bool:
    with record.lock:
        return record.acked <= set(record.finished)


def assert_record_clean(record: Record) -> None:
    assert not record.errors, record.errors[:5]
    assert not record.redelivered, f"finished tasks delivered again: {record.redelivered[:5]}"
    twice = [k for k, n in record.finished.items() if n > 1]
    assert not twice, f"finished twice: {twice[:5]}"


def readyz(base: str) -> int:
    try:
        return httpx.get(base + "/readyz", timeout=5).status_code
    except httpx.TransportError:
        return 0


def test_database_outage_is_503_then_recovers_without_losing_anything(
    private_db: PrivateServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "service.yaml", private_db.url, "pq_outage", alive_time=2)
    with service_process(config, tmp_path / "service.log") as (base, _proc):
        record, stop_producing = Record(), threading.Event()
        threads = start_threads(
            [lambda: producer(base, record, stop_producing, 10_000), lambda: consumer(base, record)]
        )
        try:
            wait_for(lambda: len(record.finished) >= 20, what="work before the outage")
            private_db.kill()
            wait_for(lambda: readyz(base) == 503, timeout=30, what="readyz to fail")
            answer = httpx.post(f"{base}/v1/queues/q/submit", json={"id": "x", "type": "t"}, timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"].isdigit()
            assert answer.headers["Content-Type"].startswith("application/problem+json")
            # the client is told what happened, not the driver's words (hosts, ports, users)
            assert answer.json()["detail"] == "database error", answer.text
            assert "database error: " in (tmp_path / "service.log").read_text()  # those go to the log
            stats = httpx.get(f"{base}/v1/queues/q", timeout=30)
            assert stats.status_code == 503
            acked_during = count(record, "acked")
            private_db.start()
            wait_for(lambda: readyz(base) == 200, timeout=30, what="readyz to recover")
            wait_for(lambda: count(record, "acked") >= acked_during + 20, timeout=30, what="submits after it")
        finally:
            stop_producing.set()
            threads[0].join(timeout=60)
        try:
            wait_for(lambda: all_acked_finished(record), timeout=60, what="every acknowledged task finished")
        finally:
            stop_threads(record, threads[1:])
    assert_record_clean(record)
    assert count(record, "acked") > 40


def test_a_postgresql_restart_under_load_loses_nothing(
    postgres: PostgreSQL,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A fast shutdown of the primary and a start on the same data directory, while two replicas
    serve a producer and consumers: nothing acknowledged is lost, nothing finished twice, and the
    replicas serve again without a restart. The window (the shutdown begun, to the first submit
    acknowledged after the start) is printed."""
    config = write_config(tmp_path / "service.yaml", postgres.url, "pq_restart", alive_time=2)
    with (
        service_process(config, tmp_path / "a.log") as (a, _a_proc),
        service_process(config, tmp_path / "b.log") as (b, _b_proc),
    ):
        record, stop_producing = Record(), threading.Event()
        threads = start_threads(
            [lambda: producer(a, record, stop_producing, 10_000)]
            + [lambda base=base: consumer(base, record) for base in (a, b)]
        )
        try:
            wait_for(lambda: len(record.finished) >= 50, what="work before the restart")
            down = time.monotonic()
            postgres.shut_down()
            acked_during = count(record, "acked")
            postgres.start()
            wait_for(lambda: count(record, "acked") > acked_during, timeout=30, what="a submit after it")
            window = time.monotonic() - down
            print(f"window: {window:.1f} s (shutdown to the first acknowledged submit)")
            wait_for(lambda: readyz(a) == 200 and readyz(b) == 200, timeout=30, what="both replicas ready")
            wait_for(lambda: count(record, "acked") >= acked_during + 50, timeout=30, what="submits after it")
        finally:
            stop_producing.set()
            threads[0].join(timeout=60)
        try:
            wait_for(lambda: all_acked_finished(record), timeout=60, what="every acknowledged task finished")
        finally:
            stop_threads(record, threads[1:])
    assert_record_clean(record)
    assert window < 20


def test_a_replica_killed_mid_polls_loses_nothing(
    private_db: PrivateServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    tasks = 200
    config = write_config(tmp_path / "service.yaml", private_db.url, "pq_replica", alive_time=2)
    port = free_port()
    with (
        service_process(config, tmp_path / "a.log", port) as (a, a_proc),
        service_process(config, tmp_path / "b.log") as (b, _b_proc),
    ):
        submitted = httpx.post(
            f"{b}/v1/queues/q/submit-batch",
            json={"tasks": [{"id": f"t{i}", "type": "t"} for i in range(tasks)]},
            timeout=60,
        )
        assert submitted.status_code == 200 and submitted.json()["failed"] == []
        record = Record()
        record.acked = {f"t{i}" for i in range(tasks)}
        threads = start_threads([lambda base=base: consumer(base, record) for base in (a, a, b, b)])
        try:
            wait_for(lambda: len(record.finished) >= tasks // 4, what="work before the kill")
            a_proc.send_signal(signal.SIGKILL)
            a_proc.wait(timeout=30)
            done_at_kill = count(record, "finished")
            with service_process(config, tmp_path / "a2.log", port):
                wait_for(lambda: all_acked_finished(record), timeout=60, what="every task finished")
                assert done_at_kill < tasks, "the replica was killed after the work was done"
                stop_threads(record, threads)  # while both replicas answer: none is left retrying
        finally:
            record.stop.set()
        counts = httpx.get(f"{b}/v1/queues/q", timeout=30).json()
    assert_record_clean(record)
    assert (counts["waiting"], counts["leased"], counts["scheduled"], counts["finished"]) == (0, 0, 0, tasks)


@pytest.mark.parametrize("backend", ["mysql", "postgres"])
def test_heavy_concurrent_load_gives_no_5xx(backend: str, tmp_path: Path, table_name: str) -> None:
    """Submit, acquire, finish and cleanup at once on MariaDB and PostgreSQL: deadlocks and
    serialization failures are retried inside."""
    url = require_server(backend)
    config = write_config(
        tmp_path / "service.yaml", url, table_name, alive_time=5, retention_time=0, cleanup_interval=0.1
    )
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    submitters, per_submitter = 4, 500
    finished: set[str] = set()

    def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
        response = client.post(f"/v1/queues/q/{path}", json=body)
        with lock:
            statuses[response.status_code] += 1
        return response

    def submit(base: str, n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(0, per_submitter, 3):
                batch = [{"id": f"s{n}-{j}", "type": "t"} for j in range(i, min(i + 3, per_submitter))]
                post(client, "submit-batch", {"tasks": batch[1:]})
                post(client, "submit", batch[0])

    def work(base: str, stop: threading.Event) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while not stop.is_set():
                got = post(client, "poll", {"max": 5, "alive_time": 5})
                leased = got.json().get("tasks", []) if got.status_code == 200 else []
                if leased:
                    items = [{"id": t["id"], "lease": t["lease"]} for t in leased]
                    done = post(client, "finish-batch", {"tasks": items})
                    if done.status_code == 200:
                        with lock:
                            finished.update(item["id"] for item in items)

    stop = threading.Event()
    with (
        service_process(config, tmp_path / "a.log") as (a, _),
        service_process(config, tmp_path / "b.log") as (b, _),
    ):
        workers = start_threads([lambda base=base: work(base, stop) for base in (a, b, a, b)])
        feeders = start_threads([lambda n=n: submit((a, b)[n % 2], n) for n in range(submitters)])
        try:
            for thread in feeders:
                thread.join(timeout=90)
            wait_for(lambda: len(finished) >= submitters * per_submitter, timeout=60, what="all finished")
        finally:
            stop.set()
            for thread in workers + feeders:
                thread.join(timeout=60)
    server_errors = {status: n for status, n in statuses.items() if status >= 500}
    assert not server_errors, f"5xx answers: {server_errors} of {sum(statuses.values())}"
    assert set(statuses) <= {200, 201}, statuses
