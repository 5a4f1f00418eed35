"""What the scenarios share: statistics, the table (direct SQL), services and client processes."""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pymysql
import yaml
from prometheus_client.parser import text_string_to_metric_families

from perfectqueue.service.store import Database, QueueStore

HORIZON = 1_300_000_000
DELETE_OFFSET = 1_000_000_000
DATA = b'{"type":"bench"}'
CLOCK = {  # the database's clock in unix seconds, as an SQL expression
    "sqlite": "CAST(strftime('%s','now') AS INTEGER)",
    "mysql": "UNIX_TIMESTAMP()",
    "postgres": "floor(extract(epoch FROM statement_timestamp()))::int",
}
NOW = {kind: "SELECT " + clock for kind, clock in CLOCK.items()}


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median and spread ((max - min) / median) of a scenario's repeats."""
    med = statistics.median(samples)
    return {
        "samples": [round(s, 3) for s in samples],
        "median": round(med, 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "spread_pct": round(100 * (max(samples) - min(samples)) / med, 1) if med else 0.0,
    }


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds."""
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(1000 * pick(0.50), 2),
        "p99_ms": round(1000 * pick(0.99), 2),
        "max_ms": round(1000 * ordered[-1], 2),
        "n": len(ordered),
    }


@dataclass
class Backend:
    """One database: ``mysql`` (MariaDB/MySQL at 127.0.0.1), ``postgres`` or ``sqlite`` (a file)."""

    kind: str
    url: str  # as the service takes it
    workdir: Path
    sqlite_path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    database: str = "test"

    @classmethod
    def create(cls, kind: str, workdir: Path, mysql_url: str, postgres_url: str = "") -> Backend:
        if kind == "sqlite":
            path = workdir / "bench.sqlite3"
            return cls("sqlite", f"sqlite:///{path}", workdir, sqlite_path=path)
        url = postgres_url if kind == "postgres" else mysql_url
        parsed = httpx.URL(url.replace("mysql+pymysql://", "mysql://").replace("+psycopg", ""))
        return cls(
            kind,
            url,
            workdir,
            host=parsed.host or "127.0.0.1",
            port=parsed.port or (5432 if kind == "postgres" else 3306),
            user=parsed.username or ("postgres" if kind == "postgres" else "root"),
            database=parsed.path.strip("/") or "test",
        )

    def connect(self, isolation: str | None = None) -> Any:
        if self.kind == "sqlite":
            assert self.sqlite_path is not None
            conn = sqlite3.connect(self.sqlite_path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            return conn
        if self.kind == "postgres":
            conn = psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=self.database)
            if isolation:
                conn.isolation_level = psycopg.IsolationLevel[isolation.replace(" ", "_")]
            return conn
        conn = pymysql.connect(
            host=self.host, port=self.port, user=self.user, database=self.database, autocommit=False
        )
        if isolation:
            with conn.cursor() as cur:
                cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
        return conn

    def execute(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, args) if args is not None else cur.execute(sql)
            rows = list(cur.fetchall()) if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def create_table(self, table: str) -> None:
        """Drop and create the queue's table, with the service's columns and indexes."""
        self.execute(f"DROP TABLE IF EXISTS {table}")
        if self.kind == "sqlite":
            conn = self.connect()
            conn.executescript(
                f"CREATE TABLE {table} (id VARCHAR(255) NOT NULL PRIMARY KEY, timeout INTEGER NOT NULL,"
                " data BLOB NOT NULL, created_at INTEGER, resource VARCHAR(255), max_running INTEGER,"
                " owner BIGINT NOT NULL DEFAULT 0);"
                f"CREATE INDEX index_{table}_on_timeout ON {table} (timeout);"
                f"CREATE INDEX index_{table}_on_resource ON {table} (resource, timeout);"
            )
            conn.close()
            return
        if self.kind == "postgres":  # the store's own table, as `perfectqueue init` makes it
            db = Database(self.url)
            try:
                QueueStore(db, table).init()
            finally:
                db.dispose()
            return
        self.execute(
            f"CREATE TABLE {table} (id VARCHAR(255) COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,"
            " timeout INT NOT NULL, data LONGBLOB NOT NULL, created_at INT,"
            " resource VARCHAR(255) COLLATE utf8mb4_bin, max_running INT,"
            " owner BIGINT UNSIGNED NOT NULL DEFAULT 0,"
            f" INDEX index_{table}_on_timeout (timeout), INDEX index_{table}_on_resource (resource, timeout))"
            " DEFAULT CHARSET=utf8mb4"
        )

    def truncate(self, table: str) -> None:
        self.execute(f"DELETE FROM {table}" if self.kind == "sqlite" else f"TRUNCATE TABLE {table}")

    def now(self) -> int:
        return int(self.execute(NOW[self.kind])[0][0])

    def load(
        self,
        table: str,
        count: int,
        *,
        prefix: str = "w",
        state: str = "waiting",
        users: int = 0,
        max_running: int | None = None,
    ) -> float:
        """Bulk-insert ``count`` rows (waiting, retained finished or expired finished); seconds taken."""
        now = self.now()
        start = time.perf_counter()
        if state == "waiting":
            timeout, created = f"{now - 10 - count} + seq", str(now - 10 - count)
        elif state == "finished":
            timeout, created = str(now - DELETE_OFFSET + 86400), "NULL"
        else:  # expired: past retention, cleanup deletes them
            timeout, created = str(now - DELETE_OFFSET - 100), "NULL"
        user = "NULL" if not users or created == "NULL" else f"'u' || (seq % {users})"
        maxr = "NULL" if max_running is None else str(max_running)
        if self.kind == "postgres":
            self.execute(
                f"INSERT INTO {table} (id, timeout, data, created_at, resource, max_running, owner)"
                f" SELECT '{prefix}' || seq, {timeout}, convert_to('{DATA.decode()}', 'UTF8'), {created},"
                f" {user}, {maxr}, 0 FROM generate_series(1, {count}) AS seq"
            )
            # as autovacuum's analyze would soon after such a load (it may be off on a test server):
            # without statistics the planner may take the fair acquisition's skip scan for a seq scan
            self.execute(f"ANALYZE {table}")
        elif self.kind == "sqlite":
            self.execute(
                f"WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < {count})"
                f" INSERT INTO {table} (id, timeout, data, created_at, resource, max_running, owner)"
                f" SELECT '{prefix}' || seq, {timeout}, CAST('{DATA.decode()}' AS BLOB), {created},"
                f" {user}, {maxr}, 0 FROM s"
            )
        else:
            if user != "NULL":
                user = f"CONCAT('u', MOD(seq, {users}))"
            step = 200_000
            for lo in range(1, count + 1, step):
                hi = min(count, lo + step - 1)
                self.execute(
                    f"INSERT INTO {table} (id, timeout, data, created_at, resource, max_running, owner)"
                    f" SELECT CONCAT('{prefix}', seq), {timeout}, '{DATA.decode()}', {created},"
                    f" {user}, {maxr}, 0 FROM seq_{lo}_to_{hi}"
                )
        return time.perf_counter() - start

    def connections(self) -> dict[str, int]:
        """Server connections to the benchmark database (other than this one), and open transactions."""
        if self.kind == "sqlite":
            return {}
        if self.kind == "postgres":
            rows = self.execute(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE state <> 'idle'),"
                " COUNT(*) FILTER (WHERE xact_start IS NOT NULL) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.database,),
            )
            return {"connections": rows[0][0], "busy": rows[0][1], "transactions": rows[0][2]}
        rows = self.execute(
            "SELECT COUNT(*), SUM(COMMAND <> 'Sleep') FROM information_schema.PROCESSLIST"
            " WHERE DB = %s AND ID <> CONNECTION_ID()",
            (self.database,),
        )
        trx = self.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
        return {
            "connections": int(rows[0][0] or 0),
            "busy": int(rows[0][1] or 0),
            "transactions": int(trx[0][0]),
        }

    def server_cpu_seconds(self) -> float | None:
        """CPU time (user + system) of the local mariadbd/mysqld process (PostgreSQL: of all its
        processes), from /proc."""
        if self.kind == "sqlite":
            return None
        if self.kind == "postgres":
            return sum(cpu_seconds(pid) for pid in pids_named("postgres")) or None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in ("mariadbd", "mysqld"):
                return cpu_seconds(int(entry.name))
        return None


def pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out[key] = int(value.split()[0])
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    base: str
    proc: subprocess.Popen[bytes]
    cpu0: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        return self.base + "/v1/queues/q"


VARIANTS = {"coalesced": "perfectqueue", "uncoalesced": "bench.uncoalesced"}


@contextmanager
def services(
    backend: Backend, table: str, count: int = 1, variant: str = "coalesced", **settings: Any
) -> Iterator[list[Service]]:
    """``count`` ``perfectqueue serve`` processes on 127.0.0.1 serving queue ``q`` on ``table``;
    ``variant`` ``uncoalesced`` turns merged calls off (bench/uncoalesced.py)."""
    config = backend.workdir / f"service-{table}.yaml"
    body = {"url": backend.url, "queues": {"q": {"table": table}}, "auto_init": True, **settings}
    config.write_text(yaml.safe_dump(body))
    started: list[Service] = []
    try:
        for i in range(count):
            port = free_port()
            log = open(backend.workdir / f"service-{table}-{variant}-{i}.log", "ab")  # noqa: SIM115
            cmd = [sys.executable, "-m", VARIANTS[variant], "serve", "-c", str(config), "--port", str(port)]
            proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
            log.close()
            started.append(Service(f"http://127.0.0.1:{port}", proc))
        for svc in started:
            wait_ready(svc)
        yield started
    finally:
        for svc in started:
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        for svc in started:
            try:
                svc.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()


def wait_ready(svc: Service, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise RuntimeError(f"service exited with {svc.proc.returncode} before it was ready")
        try:
            if httpx.get(svc.base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("service did not become ready")


CLIENTS = ("raw", "httpx")


class Http:
    """Keep-alive HTTP/1.1 JSON calls to one queue's endpoints, from a client process.

    ``raw`` is the standard library's ``http.client``, the leanest Python client (about 0.15 ms of
    client CPU per request here, against 0.4 ms for httpx): on a machine whose cores the clients
    share with the service and the database, a heavier client measures itself. ``httpx`` is what
    the SDK uses.
    """

    def __init__(self, kind: str, base: str) -> None:
        url = httpx.URL(base)
        self.kind, self.path = kind, url.path.rstrip("/")
        self._httpx = httpx.Client(base_url=base, timeout=60) if kind == "httpx" else None
        self._conn = http.client.HTTPConnection(url.host, url.port, timeout=60)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``base + path``; the parsed answer, None for none (an HTTP
        error raises)."""
        return self._call("POST", path, body)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._httpx is not None:
            resp = self._httpx.request(method, path, json=body)
            resp.raise_for_status()
            return resp.json() if resp.content else None
        encoded = None if body is None else json.dumps(body)
        self._conn.request(method, self.path + path, encoded, {"Content-Type": "application/json"})
        answer = self._conn.getresponse()
        data = answer.read()
        if answer.status >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:300]!r}")
        return json.loads(data) if data else None  # a 204 has no body

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *_: object) -> None:
        if self._httpx is not None:
            self._httpx.close()
        self._conn.close()


def run_clients(target: Callable[..., Any], args: list[tuple[Any, ...]], timeout: float = 600) -> list[Any]:
    """Run ``target(barrier, *a)`` in one process per ``a``; their return values.

    Each target waits on the barrier before it starts its timed work, and returns a dict with
    ``start`` and ``end`` (time.time()) and ``count``. The processes come from a fork server, not
    from a fork of this process: a scenario may have a thread running here (the fair scenario's cap
    watcher), and a fork taken while that thread holds a lock leaves the child waiting forever.
    """
    ctx = mp.get_context("forkserver")
    barrier = ctx.Barrier(len(args), timeout=timeout)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(target, barrier, results, *a)) for a in args]
    for p in procs:
        p.start()
    out = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    return out


def _client(target: Callable[..., Any], barrier: Any, results: Any, *args: Any) -> None:
    try:
        results.put(target(barrier, *args))
    except BaseException as exc:
        results.put({"error": repr(exc)})
        barrier.abort()  # the others stop waiting for this one
        raise


def throughput(results: list[dict[str, Any]]) -> tuple[float, int, float]:
    """(tasks per second, tasks, seconds) over the union of the clients' timed windows."""
    count = sum(r["count"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    return (count / seconds if seconds > 0 else 0.0), count, seconds


def metric_sums(base: str, names: dict[str, str]) -> dict[str, float]:
    """The service's own samples from /metrics, summed over their labels but ``call``: ``names``
    maps a sample's name (with ``{call=…}`` for a sample of one call) to the key it is summed under."""
    found = {key: 0.0 for key in names.values()}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=30).text):
        for sample in family.samples:
            call = sample.labels.get("call")
            key = names.get(sample.name if call is None else f"{sample.name}{{call={call}}}")
            if key is not None:
                found[key] += sample.value
    return found
