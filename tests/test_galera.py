"""High availability on a MariaDB Galera cluster: three nodes of the test's own, two service
replicas given all three nodes (``mysql://root@n1,n2,n3/test``), producers and workers running
while the test freezes (SIGSTOP, then SIGCONT) a node no replica writes through, then the one they
write through, SIGKILLs the node the replicas write through, restarts it (it rejoins by IST),
then SIGKILLs another (left down: the last node killed is not restarted).

Throughout, every request gets an answer: a probe thread submits through each replica every 0.1 s,
and a failed submit (503) is allowed only within FAILOVER_LIMIT seconds of a kill; the failover
window (from the kill until probes are accepted promptly again) is measured and printed.
At the end every acknowledged submit is finished, and the handlers' ledger (``done ID PID TIME``
written after ``finish()`` succeeded) shows each task finished exactly once. The printed report
has the windows, the throughput before, during and after each kill, and the conflicts and node
switches each replica retried (from its log). A client long-polls an empty queue (``wait`` 20 s)
through one replica throughout: no long-poll may take more than 3 s beyond its ``wait``.

CI runs the short version (300 tasks at 6 submits/s, two freezes, two kills). The long version,
whose numbers docs/ha.md reports, kills node 1, 2, 3, 1, ... in turn (``PQ_GALERA_KILLS``) with
more worker processes (``PQ_GALERA_PROCESSORS`` per worker, two workers):
``PQ_GALERA_TASKS=20000 PQ_GALERA_RATE=40 PQ_GALERA_KILLS=7 PQ_GALERA_PROCESSORS=6
.venv/bin/pytest tests/test_galera.py -s``
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pymysql
import pytest
import sqlalchemy as sa
import yaml
from conftest import drop_table, require_mysql
from galera_cluster import GaleraCluster, galera  # noqa: F401 - the fixture
from servers import write_config
from test_chaos import HANDLERS, Replica, check_ledger, finished_count, produce
from test_worker_harness import ledger, wait_for, worker_process

from perfectqueue.errors import UnavailableError
from perfectqueue.service.config import load_settings
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus, normalize_url, redact
from perfectqueue.service.store.nodes import split_hosts, sync_wait_of

pytestmark = pytest.mark.slow

TASKS = int(os.environ.get("PQ_GALERA_TASKS", "300"))
RATE = float(os.environ.get("PQ_GALERA_RATE", "6"))  # submits per second, all producers together
KILLS = int(os.environ.get("PQ_GALERA_KILLS", "2"))
FREEZE = float(os.environ.get("PQ_GALERA_FREEZE", "20"))  # seconds node 1 hangs first (0: none)
BYSTANDER = float(os.environ.get("PQ_GALERA_BYSTANDER", "8"))  # then node 3, written through by none
LONG_POLL = 20.0  # seconds a long-poll waits (the service's max_poll_wait)
PROCESSORS = int(os.environ.get("PQ_GALERA_PROCESSORS", "2"))
FAILOVER_LIMIT = 30.0
SLOW = 2.0  # seconds: an answer slower than this counts as part of a failover window


@dataclass
class Probes:
    """A submit to the ``probe`` queue (never processed) every 0.1 s through each replica: what it
    answered, when it was sent and when it came back. Submits write, so they stall or fail while
    the cluster cannot commit."""

    answers: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, answered, status)
    failures: list[str] = field(default_factory=list)  # no answer at all
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, base: str) -> None:
        with httpx.Client(timeout=FAILOVER_LIMIT) as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                sent = time.time()
                try:
                    body = {"id": f"{base[-5:]}-{n}", "type": "probe"}
                    status = client.post(base + "/v1/queues/probe/submit", json=body).status_code
                    self.answers.append((sent, time.time(), status))
                except httpx.HTTPError as exc:
                    self.failures.append(f"{base} at {sent:.1f}: {exc!r}")
                time.sleep(0.1)

    def window(self, kill: float) -> float:
        """From ``kill`` until the answer to the last of the probes that, one after the other from
        the kill on, failed or took over SLOW seconds (0: the first probe after it was fine)."""
        end = kill
        for sent, answered, status in sorted(a for a in self.answers if a[1] >= kill):
            if status == 201 and answered - sent <= SLOW:
                break
            end = max(end, answered)
        return end - kill

    def refused(self, kill: float) -> int:
        """Probes sent within FAILOVER_LIMIT of ``kill`` that were not accepted (503)."""
        return sum(
            1 for sent, _, status in self.answers if kill <= sent <= kill + FAILOVER_LIMIT and status != 201
        )

    def unexpected(self, kills: list[float]) -> list[tuple[float, int]]:
        """Failed probes sent outside every failover window."""
        return [
            (sent, status)
            for sent, _, status in self.answers
            if status != 201 and not any(k <= sent <= k + FAILOVER_LIMIT for k in kills)
        ]


@dataclass
class LongPolls:
    """Long-polls (``wait`` LONG_POLL) on an empty queue through one replica, one after the other:
    when each was sent and answered. A poll's first try reads the table: it meets a hung node."""

    answers: list[tuple[float, float, int]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # the detail of each 503
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, base: str) -> None:
        with httpx.Client(timeout=3 * LONG_POLL) as client:
            while not self.stop.is_set():
                sent = time.time()
                answer = client.post(base + "/v1/queues/idle/poll", json={"max": 1, "wait": LONG_POLL})
                self.answers.append((sent, time.time(), answer.status_code))
                if answer.status_code == 503:
                    self.refusals.append(str(answer.json().get("detail")))

    def longest(self, start: float, end: float) -> float:
        """The longest of the polls in flight at some moment between ``start`` and ``end``."""
        return max((b - a for a, b, _ in self.answers if a <= end and b >= start), default=0.0)


def slowest(answers: list[tuple[float, float, int]], start: float, end: float) -> float:
    """The slowest answer to a request sent between ``start`` and ``end``."""
    return max((b - a for a, b, _ in answers if start <= a <= end), default=0.0)


def write_stall(done: list[float], kill: float) -> float:
    """The longest stretch without a finished task that starts or ends within FAILOVER_LIMIT after
    ``kill`` (finishes write: this is how long writes stalled)."""
    times = sorted(t for t in done if kill - FAILOVER_LIMIT <= t <= kill + 2 * FAILOVER_LIMIT)
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= kill and a <= kill + FAILOVER_LIMIT]
    return max(gaps, default=float("inf"))


@contextmanager
def worker(tmp_path: Path, name: str, base: str) -> Iterator[None]:
    config = tmp_path / f"{name}.yaml"
    settings = {
        "url": base,
        "queue": "q",
        "processors": PROCESSORS,
        "retries": 10,
        "alive_time": 10,
        "retry_wait": 0,
        "poll_interval": 0.2,
        "task_heartbeat_interval": 2,
        "child_heartbeat_interval": 0.5,
        "child_kill_interval": 0.5,
        "child_fork_frequency_limit": 0.5,
    }
    config.write_text(yaml.safe_dump(settings))
    with worker_process(tmp_path, config, tmp_path / f"{name}.log", app="pqgalera:Dispatcher"):
        yield


def freeze(cluster: GaleraCluster, node: int, seconds: float) -> list[tuple[str, float]]:
    """SIGSTOP a node for ``seconds`` (a stalled disk, a long pause: it hangs, its connections stay
    open), then SIGCONT it and wait until it is synced again."""
    proc = cluster.nodes[node].proc
    assert proc is not None
    events = [(f"freeze node{node + 1}", time.time())]
    proc.send_signal(signal.SIGSTOP)
    try:
        survivor = (node + 1) % len(cluster.nodes)
        wait_for(lambda: cluster.cluster_size(survivor) == 2, timeout=60, what="the others to evict it")
        events.append((f"evicted node{node + 1}", time.time()))
        time.sleep(max(0.0, events[0][1] + seconds - time.time()))
    finally:
        proc.send_signal(signal.SIGCONT)
    events.append((f"thaw node{node + 1}", time.time()))
    # the thawed node's own view is stale for a moment (three members, synced): ask the others
    wait_for(lambda: cluster.cluster_size(survivor) == 3, timeout=120, what="the thawed node to rejoin")
    wait_for(lambda: cluster.cluster_size(node) == 3, timeout=120, what="the thawed node to rejoin")
    cluster.wait_synced(node)
    events.append((f"synced node{node + 1}", time.time()))
    return events


def connections_on(cluster: GaleraCluster, node: int) -> int:
    """Client connections open on ``node`` (this one aside)."""
    conn = pymysql.connect(host="127.0.0.1", port=cluster.nodes[node].port, user="root", connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler')"
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def outages(cluster: GaleraCluster, seconds: float) -> list[tuple[str, float]]:
    """First BYSTANDER seconds of node 3 (written through by none) hung, then FREEZE seconds of
    node 1 (the one written through); then KILLS times, spread over ``seconds``: SIGKILL a node
    (node 1 first), wait until the others have evicted it, restart it (all but the last one
    killed)."""
    pause = max(2.0, (seconds - FREEZE - BYSTANDER) / (2 * KILLS + 2))
    events = freeze(cluster, 2, BYSTANDER) if BYSTANDER else []
    if FREEZE:
        time.sleep(pause if events else 0)
        events += freeze(cluster, 0, FREEZE)
    for k in range(KILLS):
        node = k % len(cluster.nodes)
        time.sleep(pause)
        events.append((f"kill node{node + 1}", time.time()))
        cluster.kill(node)
        survivor = (node + 1) % len(cluster.nodes)
        wait_for(lambda: cluster.cluster_size(survivor) == 2, timeout=60, what="the others to evict it")
        events.append((f"evicted node{node + 1}", time.time()))
        if k < KILLS - 1:
            time.sleep(pause / 2)
            events.append((f"restart node{node + 1}", time.time()))
            cluster.restart(node)
            events.append((f"synced node{node + 1}", time.time()))
    return events


def throughput(done: list[float], marks: list[tuple[str, float]], end: float) -> list[str]:
    """Finishes per second between consecutive marks."""
    lines = []
    for (name, start), (_, stop) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        n = sum(1 for t in done if start <= t < stop)
        lines.append(
            f"  {name:<22} {stop - start:6.1f} s {n:6d} finished {n / max(stop - start, 1e-9):7.1f}/s"
        )
    return lines


def retry_counts(logs: list[Path]) -> list[str]:
    found = []
    for path in logs:
        text = path.read_text(errors="replace") if path.exists() else ""
        found += [f"  {path.name}: {m}" for m in re.findall(r"retried .*", text)]
        found += [f"  {path.name}: {m}" for m in re.findall(r"database node .*", text)]
    return found


def test_a_url_may_list_several_hosts() -> None:
    url = normalize_url("mysql://pq:secret@10.0.0.1:3306, 10.0.0.2,10.0.0.3:3307/queue?wsrep_sync_wait=1")
    plain, wait = sync_wait_of(url)
    assert wait == 1
    assert split_hosts(plain) == [
        "mysql+pymysql://pq:secret@10.0.0.1:3306/queue?charset=utf8mb4",
        "mysql+pymysql://pq:secret@10.0.0.2/queue?charset=utf8mb4",
        "mysql+pymysql://pq:secret@10.0.0.3:3307/queue?charset=utf8mb4",
    ]
    assert "secret" not in redact(url) and "10.0.0.3:3307" in redact(url)
    assert split_hosts("sqlite:///x.sqlite3") == ["sqlite:///x.sqlite3"]
    assert load_settings(environ={"PERFECTQUEUE_URL": url}).url == url


def test_several_hosts_that_are_no_galera_cluster_are_refused(table_name: str) -> None:
    one = require_mysql().split("@", 1)[1].split("/", 1)[0]
    db = Database(require_mysql().replace(one, f"{one},{one}", 1))
    try:
        with pytest.raises(UnavailableError, match="no Galera node"):
            QueueStore(db, table_name).counts()
    finally:
        db.dispose()


def test_init_refuses_hosts_that_are_not_one_cluster(galera: GaleraCluster) -> None:  # noqa: F811
    """A Galera node listed with a plain server (either first): refused at start, one line, exit 2."""
    plain = require_mysql().split("@", 1)[1].split("/", 1)[0]
    node = f"127.0.0.1:{galera.nodes[0].port}"
    for hosts, odd in ((f"{node},{plain}", 2), (f"{plain},{node}", 1)):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "perfectqueue",
                "init",
                "--url",
                f"mysql://root@{hosts}/test",
                "--table",
                "pq_x",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"lists several hosts, but node {odd} is no Galera node" in done.stderr.splitlines()[-1]
    db = Database(galera.url)
    try:
        db.check()  # the cluster's own nodes pass
    finally:
        db.dispose()


def test_sessions_wait_for_causality_and_get_lock_is_warned_about(
    galera: GaleraCluster,  # noqa: F811
    table_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(galera.url)
    off = Database(galera.url + "?wsrep_sync_wait=0")
    try:
        store = QueueStore(db, table_name)  # fair: acquisition takes GET_LOCK
        store.init()
        store.submit(NewTask(id="a", type="t", data={}))
        with caplog.at_level(logging.WARNING, logger="perfectqueue.store"):
            assert [a.task.id for a in store.acquire(1, 60)] == ["a"]
        assert "GET_LOCK" in caplog.text and "same node" in caplog.text
        held, elsewhere = (Database(f"mysql://root@127.0.0.1:{n.port}/test") for n in galera.nodes[:2])
        with held.engine.connect() as one, elsewhere.engine.connect() as two:
            assert one.execute(sa.text("SELECT GET_LOCK('pq_galera', 0)")).scalar() == 1
            assert two.execute(sa.text("SELECT GET_LOCK('pq_galera', 0)")).scalar() == 1  # node-local
        held.dispose()
        elsewhere.dispose()
        for database, expected in ((db, 3), (off, 0)):
            with database.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT @@wsrep_sync_wait")).scalar() == expected
                port = conn.execute(sa.text("SELECT @@port")).scalar()
            assert port == galera.nodes[0].port  # the first node listed, while it is synced
    finally:
        drop_table(db, table_name)
        db.dispose()
        off.dispose()


def node_stores(cluster: GaleraCluster, table: str, **options: Any) -> list[QueueStore]:
    """A store on each node by itself (a single-host url each): several writers at once."""
    return [
        QueueStore(Database(f"mysql://root@127.0.0.1:{n.port}/test"), table, **options) for n in cluster.nodes
    ]


def test_skip_locked_through_every_node_never_leases_twice(galera: GaleraCluster, table_name: str) -> None:  # noqa: F811
    """Two pollers per node, each node a writer: certification, not row locks, keeps them apart
    (the losers' COMMIT fails with 1213 and the store retries); no task is leased twice."""
    stores = node_stores(galera, table_name, fair=False)
    stores[0].init()
    stores[0].submit_many([NewTask(id=f"t{i}", type="t") for i in range(300)])
    leased: list[str] = []
    gave_up: list[str] = []

    def poll(store: QueueStore) -> None:
        empty = 0
        while empty < 3:
            try:
                got = store.acquire(5, 600)
            except UnavailableError as exc:  # conflicts beyond the store's retries
                gave_up.append(str(exc))
                continue
            empty = 0 if got else empty + 1
            leased.extend(a.task.id for a in got)

    try:
        threads = [threading.Thread(target=poll, args=(store,)) for store in stores for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        conflicts = sum(store.db.retried["conflicts"] for store in stores)
        print(
            f"galera: 300 tasks leased through 3 nodes: {conflicts} conflicts retried, {len(gave_up)} gave up"
        )
        assert sorted(leased) == sorted(f"t{i}" for i in range(300))  # each once, none lost
    finally:
        drop_table(stores[0].db, table_name)
        for store in stores:
            store.db.dispose()


def test_a_write_through_one_node_is_seen_at_once_through_another(
    galera: GaleraCluster,  # noqa: F811
    table_name: str,
) -> None:
    """Submit-then-get and poll-then-finish through different nodes: ``wsrep_sync_wait`` makes
    the second node wait for the first's write, so nothing answers NotFound or Preempted."""
    first, second, third = node_stores(galera, table_name, fair=False)
    first.init()
    try:
        for i in range(50):
            first.submit(NewTask(id=f"r{i}", type="t"))
            assert second.get(f"r{i}").status is TaskStatus.WAITING
            (acquired,) = [a for a in first.acquire(1, 600) if a.task.id == f"r{i}"]
            third.finish(f"r{i}", acquired.lease)
            assert second.get(f"r{i}").status is TaskStatus.FINISHED
    finally:
        drop_table(first.db, table_name)
        for store in (first, second, third):
            store.db.dispose()


@pytest.mark.timeout(300 + 3 * TASKS / RATE + 60 * KILLS + 3 * (FREEZE + BYSTANDER))
def test_galera_node_kills_lose_nothing(galera: GaleraCluster, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "pqgalera.py").write_text(HANDLERS)
    book = tmp_path / "ledger"
    queues = {"q": {"table": "pq_galera"}, "probe": {"table": "pq_galera_probe"}}
    queues["idle"] = {"table": "pq_galera_idle"}  # long-polled, never submitted to
    config = write_config(
        tmp_path / "service.yaml", galera.url, "pq_galera", queues=queues, retention_time=86400
    )  # every finished row kept: the end counts them
    replicas = [Replica(config, tmp_path / f"service-{i}.log") for i in range(2)]
    keys = [f"g{i}" for i in range(TASKS)]
    acked: set[str] = set()
    errors: list[str] = []
    probes = Probes()
    polls = LongPolls()
    with ExitStack() as stack:
        for replica in replicas:
            stack.callback(replica.stop)
            replica.start()
        for i, replica in enumerate(replicas):
            stack.enter_context(worker(tmp_path, f"w{i}", replica.base))
        threads = [threading.Thread(target=probes.run, args=(r.base,), daemon=True) for r in replicas]
        threads.append(threading.Thread(target=polls.run, args=(replicas[0].base,), daemon=True))
        threads += [
            threading.Thread(
                target=produce, args=(r.base, keys[i::2], book, 2 / RATE, acked, errors), daemon=True
            )
            for i, r in enumerate(replicas)
        ]
        started = time.time()
        for thread in threads:
            thread.start()
        events = outages(galera, TASKS / RATE)
        for thread in threads[3:]:
            thread.join(timeout=120 + TASKS / RATE)
        assert not errors, errors[:5]
        assert acked == set(keys)
        wait_for(lambda: finished_count(replicas) == TASKS, timeout=120, what="every task finished")
        ended = time.time()
        probes.stop.set()
        polls.stop.set()
        alive = [i for i in range(3) if i != (KILLS - 1) % 3]  # the node killed last stays down
        wait_for(  # the replicas' pools hold connections to the node they write through only
            lambda: sum(connections_on(galera, i) > 0 for i in alive) <= 1,
            timeout=20,
            what="no connection left on a node the replicas moved away from",
        )
    lines = ledger(book)
    check_ledger(lines, keys, killed=set())
    outs = [(name.split()[0], at) for name, at in events if name.startswith(("kill", "freeze"))]
    kills = [at for _, at in outs]
    done = [float(line[3]) for line in lines if line[0] == "done"]
    windows = [probes.window(at) for at in kills]
    runs = sum(1 for line in lines if line[0] == "start")
    refused = ", ".join(f"+{sent - started:.1f} s" for sent, _, status in polls.answers if status == 503)
    report = [f"galera: {TASKS} tasks, {runs} runs, {len(probes.answers)} probes"]
    report += [f"  {len(polls.answers)} long-polls (wait {LONG_POLL:g} s); answered 503: {refused or 'none'}"]
    report += [f"    {detail}" for detail in polls.refusals]
    report += [f"  {name} at +{at - started:.1f} s" for name, at in events]
    for i, (what, at) in enumerate(outs):
        back = [*kills, ended][i + 1]  # until the next outage
        report.append(
            f"  {what} {i + 1}: failover window {windows[i]:.1f} s ({probes.refused(at)} probes answered "
            f"503), longest stretch without a finish {write_stall(done, at):.1f} s, slowest probe "
            f"{slowest(probes.answers, at, back):.1f} s, longest long-poll {polls.longest(at, back):.1f} s"
        )
    report += throughput(done, [("before", started), *events], ended)
    report += retry_counts([r.log for r in replicas])
    print("\n".join(report))
    for replica in replicas:  # the first kill hit the node they wrote through: they moved
        assert "now writing through node 2" in replica.log.read_text(), replica.log
        assert not FREEZE or "no answer to a liveness check" in replica.log.read_text(), replica.log
    assert not probes.failures, probes.failures[:5]
    assert {status for _, _, status in polls.answers} <= {200, 503}, polls.answers  # 503: Retry-After
    assert max(b - a for a, b, _ in polls.answers) <= LONG_POLL + 3, polls.answers  # wait=20 stays ~20 s
    assert not probes.unexpected(kills), probes.unexpected(kills)[:5]
    assert all(w <= FAILOVER_LIMIT for w in windows), windows
    last = (KILLS - 1) % 3  # killed last, not restarted
    assert [galera.cluster_size(i) for i in range(3) if i != last] == [2, 2]
