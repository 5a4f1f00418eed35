"""CONTRACT.md §4 with real service processes: lease expiry and fencing across replicas, and
long-polls (a thousand of them on a two-connection pool, delivery on submit, release on SIGTERM).

Some conditions are read from Linux's /proc (the service's sockets and files): how many
connections the service holds to MariaDB or to the SQLite file, and whether it has read the
requests sent to it. Elsewhere those checks are skipped or replaced by a short pause.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from conftest import backend_of, queue_runtime
from servers import running_services, service_process, write_config

from perfectqueue.service.store import AcquiredTask, Database, NewTask, QueueStore

pytestmark = pytest.mark.slow

HAS_PROC = sys.platform.startswith("linux") and Path("/proc/self/fd").is_dir()
PROBLEM = "application/problem+json"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.02)


# -- what a process holds, from /proc --------------------------------------------------------------


def tcp_sockets(pid: int) -> list[tuple[int, int, str, int]]:
    """The process's TCP sockets: (local port, remote port, state, bytes received and unread)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[9] in inodes:
                    local, remote, state = fields[1], fields[2], fields[3]
                    unread = int(fields[4].split(":")[1], 16)
                    found.append(
                        (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, unread)
                    )
    return found


ESTABLISHED = "01"


def requests_read(pid: int, port: int, count: int) -> bool:
    """Has the service accepted ``count`` connections on ``port`` and read all they sent?"""
    accepted = [s for s in tcp_sockets(pid) if s[0] == port and s[2] == ESTABLISHED]
    return len(accepted) >= count and all(unread == 0 for *_, unread in accepted)


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


SESSION_HOSTS = {  # each session of the test database: its client's "host:port" or port
    "mysql": "SELECT HOST FROM information_schema.PROCESSLIST WHERE DB = DATABASE()",
    "postgres": "SELECT client_port FROM pg_stat_activity WHERE datname = current_database()",
}


def server_connections_of(db: Database, pid: int) -> int:
    """How many sessions the server shows from the process ``pid``."""
    server = db.engine.url.port or (5432 if db.is_postgres else 3306)
    ports = {
        local for local, remote, state, _ in tcp_sockets(pid) if remote == server and state == ESTABLISHED
    }
    with db.engine.connect() as conn:
        hosts = [str(host) for host in conn.execute(sa.text(SESSION_HOSTS[backend(db)])).scalars() if host]
    client_ports = [host.rsplit(":", 1)[-1] for host in hosts]
    return sum(1 for port in client_ports if port.isdigit() and int(port) in ports)


def sessions_in_database(db: Database) -> int:
    with db.engine.connect() as conn:
        return len(conn.execute(sa.text(SESSION_HOSTS[backend(db)])).all())


def service_connections(db: Database, pid: int, baseline: int) -> int | None:
    """The service's connections to the database: exactly, from /proc; elsewhere MariaDB's
    sessions in the test database beyond ``baseline`` (None for SQLite)."""
    if HAS_PROC:
        return sqlite_connections_of(db, pid) if db.is_sqlite else server_connections_of(db, pid)
    return None if db.is_sqlite else sessions_in_database(db) - baseline


def sqlite_connections_of(db: Database, pid: int) -> int:
    """How many times the process has the SQLite file open (one descriptor per connection)."""
    path = os.path.realpath(db.engine.url.database or "")
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == path
        except OSError:
            continue
    return count


backend = backend_of


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"needs {needed} open files")


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code, response.text


# -- 3. lease expiry and fencing ------------------------------------------------------------------


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "pq.yml", db_url, table_name)
    with running_services(config, tmp_path) as (a, b), httpx.Client(timeout=30) as client:

        def poll(base: str, alive_time: int, wait: float = 0) -> list[dict[str, Any]]:
            response = client.post(
                f"{base}/v1/queues/q/poll", json={"max": 5, "alive_time": alive_time, "wait": wait}
            )
            assert response.status_code == 200, response.text
            tasks: list[dict[str, Any]] = response.json()["tasks"]
            return tasks

        def get() -> dict[str, Any]:
            response = client.get(f"{b}/v1/queues/q/tasks/expiring")
            assert response.status_code == 200, response.text
            task: dict[str, Any] = response.json()
            return task

        submitted = client.post(
            f"{a}/v1/queues/q/submit", json={"id": "expiring", "type": "t", "data": {"v": 1}}
        )
        assert submitted.status_code == 201, submitted.text
        [first] = poll(a, alive_time=1)

        # The lease runs out within 1-2 s of the database's clock; then another poll gets the task.
        started, second = time.monotonic(), None
        while second is None:
            assert time.monotonic() - started < 10, "the expired lease was never taken over"
            got = poll(b, alive_time=300)
            assert len(got) <= 1
            second = got[0] if got else None
            if second is None:
                time.sleep(0.1)
        print(f"\n[{backend(database)}] taken over after {time.monotonic() - started:.2f} s")
        assert second["id"] == "expiring"
        assert second["lease"] != first["lease"]
        ends = [datetime.fromisoformat(t["lease_expires_at"]).timestamp() for t in (first, second)]
        assert ends[1] - 300 >= ends[0], "taken over before the first lease expired"

        old = {"id": "expiring", "lease": first["lease"]}
        for op, body in [
            ("heartbeat", {**old, "alive_time": 300}),
            ("heartbeat", {**old, "data": {"v": 2}}),
            ("finish", old),
            ("retry", {**old, "retry_wait": 0}),
            ("release", old),
        ]:
            assert_problem(client.post(f"{a}/v1/queues/q/{op}", json=body), 409, "preempted")
        batch = client.post(f"{a}/v1/queues/q/finish-batch", json={"tasks": [old]})
        assert batch.status_code == 200, batch.text
        assert batch.json()["successful"] == []
        assert [f["code"] for f in batch.json()["failed"]] == ["preempted"]

        # The old holder changed nothing: still running under the new lease, same data and lease end.
        task = get()
        assert (task["status"], task["data"]) == ("running", {"v": 1})
        assert task["lease_expires_at"] == second["lease_expires_at"]
        assert poll(a, alive_time=300) == []

        new = {"id": "expiring", "lease": second["lease"]}
        heartbeat = client.post(f"{a}/v1/queues/q/heartbeat", json={**new, "alive_time": 300})
        assert heartbeat.status_code == 204, heartbeat.text
        finished = client.post(f"{b}/v1/queues/q/finish", json=new)
        assert finished.status_code == 204, finished.text
        assert_problem(client.post(f"{a}/v1/queues/q/finish", json=new), 409, "already_finished")
        assert_problem(client.post(f"{a}/v1/queues/q/finish", json=old), 409, "preempted")
        assert_problem(client.post(f"{b}/v1/queues/q/heartbeat", json=new), 409, "preempted")
        assert get()["status"] == "finished"

        # Never delivered again, well past when either lease would have run out.
        assert poll(a, alive_time=1, wait=2.5) == []
        assert poll(b, alive_time=1) == []
        assert get()["status"] == "finished"


# -- 5. a thousand long-polls on a two-connection pool ----------------------------------------------

POLLS = 1000
# Long enough that opening 1,000 connections, letting the service read them and checking it (2-6 s
# on two busy cores) leaves the polls several seconds of wait when the tasks are submitted.
WAIT = 10.0
POOL = 2


def test_a_thousand_long_polls_do_not_exhaust_a_small_pool(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """1,000 polls wait at once on a service whose pool has 2 connections: it keeps to 2, keeps
    answering, hands 50 new tasks to 50 of the waiting polls (once each) well before their wait
    ends, and answers the rest empty when it does."""
    raise_open_files(2 * POLLS + 500)
    config = write_config(tmp_path / "pq.yml", db_url, table_name, pool_size=POOL, pool_overflow=0)
    baseline = 0 if HAS_PROC or database.is_sqlite else sessions_in_database(database)
    with service_process(config, tmp_path / "service.log") as (base, proc):
        outcome = asyncio.run(thousand_polls(base, proc.pid, database, baseline))
        with httpx.Client(timeout=30) as client:
            counts = client.get(f"{base}/v1/queues/q").json()

    polls, ids, submitted_at, held, answers, phases = (
        outcome[k] for k in ("polls", "ids", "submitted_at", "held", "answers", "phases")
    )
    delivered = [(start, end, tasks) for start, end, status, tasks in polls if tasks]
    latency = max((end for _, end, _ in delivered), default=submitted_at) - submitted_at
    print(
        f"\n[{backend(database)}] {POLLS} polls: read by the service after "
        f"{phases['read']:.2f} s, first GET then answered in {phases['first']:.2f} s, burst handled after "
        f"{phases['settled']:.2f} s; its database connections "
        f"meanwhile {held}; GET answered in {[round(a, 3) for a in answers]} s; 50 tasks submitted after "
        f"{phases['submitted']:.2f} s, the last delivered {latency:.3f} s later"
    )
    assert all(status == 200 for _, _, status, _ in polls), Counter(status for _, _, status, _ in polls)
    assert sorted(t["id"] for _, _, tasks in delivered for t in tasks) == sorted(ids), "not each task once"
    assert all(len(tasks) == 1 for _, _, tasks in delivered)
    # Each waiting poll had at least WAIT - phases["submitted"] seconds left when the tasks came.
    assert phases["submitted"] < WAIT - 3, "setting up took so long that the test proves nothing"
    assert latency < 3, "the tasks reached the waiting polls only near their deadline"
    empty = [end - start for start, end, _, tasks in polls if not tasks]
    assert len(empty) == POLLS - len(ids)
    assert min(empty) >= WAIT - 0.05, "an empty long-poll returned before its wait was over"
    assert max(empty) < WAIT + 15
    held = [n for n in held if n is not None]
    if HAS_PROC:
        assert min(held) >= 1, "the count of the service's connections is wrong: it keeps its pool"
    margin = 0 if HAS_PROC else 1  # counted from a baseline, the test's own sessions may vary
    listener = 1 if database.is_postgres else 0  # the one connection that listens for wake-ups
    limit = POOL + listener + margin
    assert max(held, default=0) <= limit, f"the service held more connections than its pool: {held}"
    assert max(answers) < 2, f"the service was slow to answer while polls waited: {answers}"
    assert counts["waiting"] == 0
    assert counts["leased"] == len(ids)


async def thousand_polls(base: str, pid: int, db: Database, baseline: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=POLLS + 100, max_keepalive_connections=POLLS + 100)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=httpx.Timeout(60)) as client:

        async def poll() -> tuple[float, float, int, list[dict[str, Any]]]:
            start = time.monotonic()
            response = await client.post(
                "/v1/queues/q/poll", json={"max": 1, "alive_time": 300, "wait": WAIT}
            )
            tasks = response.json().get("tasks", []) if response.status_code == 200 else []
            return start, time.monotonic(), response.status_code, tasks

        opened = time.monotonic()
        polls = [asyncio.create_task(poll()) for _ in range(POLLS)]
        try:
            if HAS_PROC:
                await async_wait_until(
                    lambda: requests_read(pid, port_of(base), POLLS),
                    WAIT / 2,
                    f"the service read {POLLS} polls",
                )
            else:
                await asyncio.sleep(2)
            read = time.monotonic()

            async def get() -> float:
                asked = time.monotonic()
                try:
                    response = await client.get("/v1/queues/q", timeout=WAIT / 3)
                except httpx.TimeoutException:
                    raise AssertionError("the service did not answer while the polls waited") from None
                assert response.status_code == 200, response.text
                assert response.json()["waiting"] == 0
                return time.monotonic() - asked

            # The service works through the burst of requests, then answers at once. Were the
            # waiting polls holding connections (or the threads that use them), nothing could be
            # answered before their wait ended.
            deadline = time.monotonic() + WAIT / 2
            first = await get()
            while await get() > 0.5:
                assert time.monotonic() < deadline, "the service stayed slow while polls waited"
            settled = time.monotonic()
            assert not any(p.done() for p in polls), "a long-poll returned although nothing was submitted"

            held, answers = [], []
            for _ in range(3):
                held.append(await asyncio.to_thread(service_connections, db, pid, baseline))
                answers.append(await get())

            ids = [f"late-{i}" for i in range(50)]
            submitted_at = time.monotonic()
            response = await client.post(
                "/v1/queues/q/submit-batch", json={"tasks": [{"id": i, "type": "t"} for i in ids]}
            )
            assert response.status_code == 200, response.text
            assert len(response.json()["successful"]) == len(ids)
            held.append(await asyncio.to_thread(service_connections, db, pid, baseline))
            results = await asyncio.gather(*polls)
        finally:
            for p in polls:
                p.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
    phases = {
        "read": read - opened,
        "first": first,
        "settled": settled - opened,
        "submitted": submitted_at - opened,
    }
    return {
        "polls": results,
        "ids": ids,
        "submitted_at": submitted_at,
        "held": held,
        "answers": answers,
        "phases": phases,
    }


# -- 6. shutdown releases waiting polls ------------------------------------------------------------


def test_sigterm_returns_waiting_polls_at_once_and_exits_promptly(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "pq.yml", db_url, table_name)
    with service_process(config, tmp_path / "service.log") as (base, proc):
        polls, signalled, exited = asyncio.run(polls_across_sigterm(base, proc))
        returncode = proc.returncode

    print(f"\nSIGTERM with 20 waiting polls: exited after {exited - signalled:.2f} s")
    assert exited - signalled < 10, "the service took too long to stop"
    assert returncode == 0, "a stop by SIGTERM that completed is a normal exit"
    for status, tasks, end in polls:
        assert (status, tasks) == (200, [])
        assert end - signalled < 5, "a waiting poll was not released when the stop began"


async def polls_across_sigterm(base: str, proc: Any) -> tuple[list[tuple[int, Any, float]], float, float]:
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60)) as client:

        async def poll() -> tuple[int, Any, float]:
            response = await client.post("/v1/queues/q/poll", json={"max": 1, "wait": 20})
            return response.status_code, response.json().get("tasks"), time.monotonic()

        polls = [asyncio.create_task(poll()) for _ in range(20)]
        if HAS_PROC:
            await async_wait_until(
                lambda: requests_read(proc.pid, port_of(base), 20), 10, "the service read 20 polls"
            )
        # Read is not yet waiting: a poll read just before the signal may not have begun, and one
        # that begins after it does not wait at all. A second later they are all in the line.
        read = time.monotonic()
        await async_wait_until(lambda: time.monotonic() - read > 1, 2, "the polls waited a second")
        assert not any(p.done() for p in polls), "a long-poll returned although nothing was submitted"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, pending = await asyncio.wait(polls, timeout=15)
        assert not pending, f"{len(pending)} waiting polls were still open 15 s after SIGTERM"
        results = [p.result() for p in polls]
        await asyncio.to_thread(proc.wait, 15)
        exited = time.monotonic()
    return results, signalled, exited


# -- 7. a submit wakes the polls waiting on the same replica ----------------------------------------


def test_submit_wakes_a_long_poll_waiting_on_the_same_replica(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """With the periodic check for work set to 30 s, only the submit's own wake-up can deliver
    the task within 2 s."""
    config = write_config(tmp_path / "pq.yml", db_url, table_name, poll_check_interval=30)
    with (
        service_process(config, tmp_path / "service.log") as (base, proc),
        httpx.Client(base_url=base, timeout=30) as poller,
        httpx.Client(base_url=base, timeout=30) as submitter,
        ThreadPoolExecutor(1) as executor,
    ):
        started = time.monotonic()
        waiting = executor.submit(poller.post, "/v1/queues/q/poll", json={"max": 1, "wait": 10})
        if HAS_PROC:
            wait_until(lambda: requests_read(proc.pid, port_of(base), 1), 5, "the service read the poll")
        # Read is not yet waiting: the poll first tries to acquire (which a submit meanwhile would
        # satisfy without any wake-up); give it that moment, so that the test shows the wake-up.
        wait_until(lambda: time.monotonic() - started > 0.3, 1, "the poll waited a little")
        assert not waiting.done(), "the long-poll returned although nothing was submitted"
        submitted_at = time.monotonic()
        response = submitter.post("/v1/queues/q/submit", json={"id": "wake", "type": "t"})
        assert response.status_code == 201, response.text
        polled = waiting.result(timeout=15)
        latency = time.monotonic() - submitted_at

    assert_delivered(polled, ["wake"], latency, 2, "the submit")


def test_a_finish_that_frees_a_users_slot_wakes_a_long_poll(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """Fair scheduling: user A may run one task at a time and has two. With the periodic check
    set to 30 s, only the finish of A's first task can wake the poll waiting for the second."""
    config = write_config(tmp_path / "pq.yml", db_url, table_name, poll_check_interval=30)
    with (
        service_process(config, tmp_path / "service.log") as (base, _proc),
        httpx.Client(base_url=base, timeout=30) as worker,
        httpx.Client(base_url=base, timeout=30) as poller,
        ThreadPoolExecutor(1) as executor,
    ):
        for i in range(2):
            task = {"id": f"a{i}", "type": "t", "user": "A", "max_running": 1}
            assert worker.post("/v1/queues/q/submit", json=task).status_code == 201
        [first] = worker.post("/v1/queues/q/poll", json={"max": 5, "wait": 0}).json()["tasks"]
        started = time.monotonic()
        waiting = executor.submit(poller.post, "/v1/queues/q/poll", json={"max": 1, "wait": 10})
        wait_until(lambda: time.monotonic() - started > 0.5, 1, "the poll waited a little")
        assert not waiting.done(), "the long-poll returned although A is at its max_running"
        finished_at = time.monotonic()
        done = worker.post("/v1/queues/q/finish", json={"id": first["id"], "lease": first["lease"]})
        assert done.status_code == 204, done.text
        polled = waiting.result(timeout=15)
        latency = time.monotonic() - finished_at

    assert_delivered(polled, ["a1"], latency, 2, "the finish")


def test_submit_through_another_replica_reaches_a_waiting_poll(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """A replica learns of a submit elsewhere by its periodic check (0.5 s by default)."""
    config = write_config(tmp_path / "pq.yml", db_url, table_name)
    with (
        running_services(config, tmp_path) as (a, b),
        httpx.Client(timeout=30) as client,
        ThreadPoolExecutor(1) as executor,
    ):
        started = time.monotonic()
        waiting = executor.submit(client.post, f"{a}/v1/queues/q/poll", json={"max": 1, "wait": 10})
        wait_until(lambda: time.monotonic() - started > 0.5, 1, "the poll waited a little")
        assert not waiting.done(), "the long-poll returned although nothing was submitted"
        submitted_at = time.monotonic()
        response = client.post(f"{b}/v1/queues/q/submit", json={"id": "elsewhere", "type": "t"})
        assert response.status_code == 201, response.text
        polled = waiting.result(timeout=15)
        latency = time.monotonic() - submitted_at

    assert_delivered(polled, ["elsewhere"], latency, 3, "the submit elsewhere")


def assert_delivered(
    polled: httpx.Response, ids: list[str], latency: float, limit: float, after: str
) -> None:
    """The long-poll answered with exactly ``ids``, within ``limit`` seconds of ``after``."""
    print(f"\ndelivered {latency:.3f} s after {after}")
    assert polled.status_code == 200, polled.text
    assert [t["id"] for t in polled.json()["tasks"]] == ids
    assert latency < limit


# -- a poller killed while it waits -----------------------------------------------------------------

POLLER = """
import sys, httpx
httpx.post(sys.argv[1] + "/v1/queues/q/poll", json={"max": 1, "alive_time": 300, "wait": 20}, timeout=60)
"""


def test_a_poller_killed_while_waiting_does_not_swallow_the_next_task(
    database: Database, db_url: str, table_name: str, tmp_path: Path
) -> None:
    """A worker killed during its long-poll leaves a waiter behind; the task submitted next must
    reach a live poller at once, not sit leased to the dead one for its alive_time (300 s)."""
    config = write_config(tmp_path / "pq.yml", db_url, table_name)
    with (
        service_process(config, tmp_path / "service.log") as (base, proc),
        httpx.Client(base_url=base, timeout=30) as client,
        ThreadPoolExecutor(1) as executor,
    ):
        poller = subprocess.Popen([sys.executable, "-c", POLLER, base])
        try:
            if HAS_PROC:
                wait_until(lambda: requests_read(proc.pid, port_of(base), 1), 10, "the service read the poll")
            started = time.monotonic()
            wait_until(lambda: time.monotonic() - started > 0.5, 1, "the poll waited a little")
            assert poller.poll() is None, "the poller ended although nothing was submitted"
        finally:
            poller.kill()
            poller.wait()
        live = executor.submit(client.post, "/v1/queues/q/poll", json={"max": 1, "wait": 10})
        wait_until(lambda: time.monotonic() - started > 1, 2, "the live poll waited a little")
        submitted_at = time.monotonic()
        response = client.post("/v1/queues/q/submit", json={"id": "after-kill", "type": "t"})
        assert response.status_code == 201, response.text
        polled = live.result(timeout=15)
        latency = time.monotonic() - submitted_at

    assert polled.status_code == 200, polled.text
    assert [t["id"] for t in polled.json()["tasks"]] == ["after-kill"], "the task went to the dead poller"
    assert latency < 3


# -- a burst of long-polls, in process (the service's LongPoll over a real store) ------------------


async def burst(store: QueueStore, polls: int, wait: float) -> tuple[list[list[AcquiredTask]], Counter[str]]:
    """``polls`` long-polls arriving at once, run as the service runs them (store calls in threads,
    two at a time: a two-connection pool); the results and how often each store call ran."""
    calls: Counter[str] = Counter()
    limiter = anyio.CapacityLimiter(2)

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        calls[fn.__name__] += 1
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

    line = queue_runtime(store, run, poll_check_interval=30).polls
    try:
        results = await asyncio.gather(*(line.poll(1, 300, wait) for _ in range(polls)))
    finally:
        line.close()
        if line.dispatcher is not None:
            await line.dispatcher
    return list(results), calls


def test_a_burst_of_long_polls_on_an_empty_queue_acquires_once(store: QueueStore) -> None:
    """Polls that arrive while another is acquiring join the line instead of each acquiring: a
    burst of a thousand would otherwise queue a thousand acquisitions ahead of every request."""
    results, calls = asyncio.run(burst(store, 100, 0.5))
    assert results == [[]] * 100
    assert calls["acquire"] <= 3, f"{calls['acquire']} acquisitions for one burst of 100 polls"


def test_a_burst_of_long_polls_takes_the_waiting_tasks_at_once(store: QueueStore) -> None:
    """Polls that join the line during a burst still get the tasks already waiting within their
    3 s wait (the dispatcher looks at once, not after its 30 s check interval)."""
    for i in range(10):
        store.submit(NewTask(id=f"w{i}", type="t"))
    results, _ = asyncio.run(burst(store, 20, 3))
    assert sorted(t.task.id for r in results for t in r) == sorted(f"w{i}" for i in range(10))
    assert store.counts().waiting == 0


def test_a_line_served_short_of_its_demand_waits_to_be_woken(store: QueueStore) -> None:
    """An acquisition for the line that gets fewer tasks than its waiters want means nothing
    more can start now (here a user at its max_running): the line waits for what wakes it,
    rather than acquiring again at once for nothing (with the table's lock held, under fair
    scheduling). Each finish that frees a slot wakes it, and the next waiter gets the next task."""
    store.submit_many([NewTask(f"a{i}", "t", user="A", max_running=2) for i in range(4)])
    running = store.acquire(2, 300)  # a0 and a1: A is at its cap

    async def scenario() -> tuple[list[list[AcquiredTask]], list[int]]:
        calls: Counter[str] = Counter()
        limiter = anyio.CapacityLimiter(2)

        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            calls[fn.__name__] += 1
            return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)

        async def settled(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 5
            while not condition():
                assert time.monotonic() < deadline, "the line did not get there"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # and anything it would do next

        line = queue_runtime(store, run, poll_check_interval=30).polls
        polls = [asyncio.create_task(line.poll(1, 300, 20)) for _ in range(3)]
        acquisitions = []
        try:
            await settled(lambda: len(line.waiters) == 3)
            for acquired in running:  # each finish frees one slot of A's
                before = calls["acquire"]
                store.finish(acquired.task.id, acquired.lease)
                line.notify()
                served = sum(p.done() for p in polls)
                await settled(lambda served=served: sum(p.done() for p in polls) == served + 1)
                acquisitions.append(calls["acquire"] - before)
        finally:
            line.close()
            if line.dispatcher is not None:
                await line.dispatcher
        return [await p for p in polls], acquisitions

    results, acquisitions = asyncio.run(scenario())
    assert sorted(t.task.id for r in results for t in r) == ["a2", "a3"]
    assert acquisitions == [1, 1], "the line acquired again although the last fell short"


def test_a_long_poll_for_more_tasks_than_one_acquisition_of_the_line_is_served(store: QueueStore) -> None:
    """The line takes any poll the store does (up to 1,000 tasks, which is also how many it
    gathers for several waiters; the API asks for at most 100): the head of the line is served
    whatever it wants, never failed by an acquisition of nothing."""

    async def scenario() -> list[AcquiredTask]:
        async def run(fn: Callable[..., Any], *args: Any) -> Any:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args))

        line = queue_runtime(store, run, poll_check_interval=30).polls
        try:
            waiting = asyncio.create_task(line.poll(500, 300, 20))
            deadline = time.monotonic() + 5
            while not line.waiters:
                assert time.monotonic() < deadline, "the poll did not wait"
                await asyncio.sleep(0.01)
            store.submit_many([NewTask(f"t{i}", "t") for i in range(150)])
            line.notify()
            return await asyncio.wait_for(waiting, 5)
        finally:
            line.close()
            if line.dispatcher is not None:
                await line.dispatcher

    assert sorted(a.task.id for a in asyncio.run(scenario())) == sorted(f"t{i}" for i in range(150))
