"""Time the store's hot path in-process: acquire + finish, with no HTTP in between.

``python -m bench.store_calls [--url URL] [--pairs N] [--batch K]`` prints, for each url, the
mean milliseconds per acquisition of one task followed by its ``finish``, and per acquisition of
``K`` tasks followed by one ``finish_many`` of them, per ``submit_many`` of 1,000 tasks, and per
new connection (opened and used once, the pool emptied before each); with
``--users U``, the batched run again with fair scheduling over U users (max_running 1), with the
process's CPU time per pair and (MariaDB) the median time each acquisition held the table's lock
beside it (``--fair-rounds`` pairs, default a tenth of the batched run's). Otherwise
fair scheduling is off (``FOR UPDATE SKIP LOCKED`` on MariaDB), as in the harness's service scenarios.
Each run uses a fresh table (SQLite by default: a file in a temporary directory, removed after).

A ``mysql+mysqldb://`` url measures the same store calls through mysqlclient (the C driver,
``pip install mysqlclient``; it needs the MariaDB client library to build) instead of PyMySQL:
the service itself accepts only PyMySQL, this is only how the choice was measured.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence

from perfectqueue.service.store import Database, QueueStore, database
from perfectqueue.service.store.model import NewTask
from perfectqueue.service.store.observer import Unobserved

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"


def _database(url: str) -> Database:
    if not url.startswith("mysql+mysqldb://"):
        return Database(url)
    accepts = database.normalize_url
    database.normalize_url = lambda given: given  # for this measurement only: see the docstring
    try:
        return Database(url)
    finally:
        database.normalize_url = accepts


class _LockHolds(Unobserved):
    """An observer that keeps how long each acquisition held the table's named lock."""

    def __init__(self) -> None:
        self.holds: list[float] = []

    def lock_held(self, waited: float, held: float) -> None:
        self.holds.append(held)


def _store(url: str, tasks: int, users: int = 0) -> QueueStore:
    """A fresh table with ``tasks`` waiting; with ``users``, spread over that many users with
    max_running 1 each, and fair scheduling on. Its observer keeps the lock's holds."""
    table = f"bench_calls_{secrets.token_hex(4)}"
    store = QueueStore(_database(url), table, fair=users > 0, observer=_LockHolds())
    store.init()
    for start in range(0, tasks, 500):
        store.submit_many(
            [
                NewTask(id=f"t{i}", type="noop", user=f"u{i % users}" if users else None, max_running=1)
                for i in range(start, min(start + 500, tasks))
            ]
        )
    return store


def _drop(store: QueueStore) -> None:
    store.db.engine.dispose()
    with store.db.engine.begin() as conn:
        store.table.drop(conn)
    store.db.dispose()


def one_by_one(url: str, pairs: int) -> float:
    """Mean ms per acquire(max=1) + finish."""
    store = _store(url, pairs)
    try:
        started = time.perf_counter()
        for _ in range(pairs):
            (got,) = store.acquire(1, 60)
            store.finish(got.task.id, got.lease)
        return (time.perf_counter() - started) * 1000 / pairs
    finally:
        _drop(store)


def batched(url: str, rounds: int, batch: int, users: int = 0) -> tuple[float, float, float | None]:
    """Mean ms per acquire(max=batch) + finish_many of what it got, the process's CPU ms for
    each, and the median ms an acquisition held the table's lock (None if none took it) (fair
    over ``users`` users: the table holds 20 tasks per user, or ``rounds * batch`` tasks if more)."""
    store = _store(url, max(rounds * batch, 20 * users), users)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            got = store.acquire(batch, 60)
            assert len(got) == batch
            results = store.finish_many([(a.task.id, a.lease) for a in got])
            assert results == [None] * batch
        holds = store.observer.holds if isinstance(store.observer, _LockHolds) else []
        held = statistics.median(holds) * 1000 if holds else None
        return (
            (time.perf_counter() - started) * 1000 / rounds,
            (time.process_time() - cpu) * 1000 / rounds,
            held,
        )
    finally:
        _drop(store)


def submits(url: str, rounds: int, size: int = 1000) -> float:
    """Mean ms per submit_many of ``size`` new tasks."""
    store = _store(url, 0)
    try:
        started = time.perf_counter()
        for r in range(rounds):
            assert (
                store.submit_many([NewTask(id=f"s{r}-{i}", type="noop") for i in range(size)])
                == [None] * size
            )
        return (time.perf_counter() - started) * 1000 / rounds
    finally:
        _drop(store)


def connects(url: str, count: int = 20) -> float:
    """Mean ms to open a new connection (and its first statement): the pool is emptied before each."""
    db = _database(url)
    try:
        started = time.perf_counter()
        for _ in range(count):
            db.engine.dispose()
            with db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        return (time.perf_counter() - started) * 1000 / count
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_calls", description=__doc__)
    parser.add_argument(
        "--url", action="append", help="database url (repeatable; default: SQLite and MariaDB)"
    )
    parser.add_argument("--pairs", type=int, default=2000, help="acquire + finish pairs per run")
    parser.add_argument("--batch", type=int, default=10, help="tasks per acquisition in the batched run")
    parser.add_argument(
        "--users",
        type=int,
        action="append",
        help="also the batched run with fair scheduling over this many users, max_running 1 (repeatable)",
    )
    parser.add_argument("--fair-rounds", type=int, help="pairs per fair run (default: pairs / batch / 10)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for url in args.url or [f"sqlite:///{tmp}/store_calls.sqlite3", DEFAULT_MYSQL_URL]:
            single = one_by_one(url, args.pairs)
            many, _, _ = batched(url, args.pairs // args.batch, args.batch)
            submit = submits(url, max(1, args.pairs // 100))
            print(f"{url.split(':')[0]:14} acquire(1)+finish {single:6.3f} ms", end="   ")
            print(f"acquire({args.batch})+finish_many {many:6.3f} ms", end="   ")
            print(f"submit_many(1000) {submit:6.2f} ms   new connection {connects(url):6.2f} ms")
            for users in args.users or []:
                rounds = args.fair_rounds or max(1, args.pairs // args.batch // 10)
                fair, cpu, held = batched(url, rounds, args.batch, users)
                lock = "" if held is None else f", lock held {held:.3f} ms"
                line = f"fair, {users} users: acquire({args.batch})+finish_many {fair:7.3f} ms"
                print(f"{'':14} {line} (CPU {cpu:.3f} ms{lock})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
