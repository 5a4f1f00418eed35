"""Shared by the SDK and CLI tests: real targets to open a queue on, and a real misbehaving proxy.

A *target* is one of: a real service process (``perfectqueue serve``) over SQLite, MariaDB or PostgreSQL, with
many pre-declared queues so that every test gets an empty one; or a database for the direct
``rdb_compat`` backend, where every test gets a freshly created table.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import SERVERS, drop_table, require_server
from servers import service_process

from perfectqueue.client import TaskMetadata
from perfectqueue.service.store import Database, QueueStore

SERVICE_QUEUES = 3
TARGETS = [f"{kind}-{db}" for kind in ("http", "rdb_compat") for db in ("sqlite", "mysql", "postgres")]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, step: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def write_queues_config(path: Path, url: str, tables: dict[str, str], **settings: Any) -> Path:
    """A service settings file declaring one queue per entry of ``tables`` (name -> table)."""
    queues = {name: {"table": table} for name, table in tables.items()}
    path.write_text(yaml.safe_dump({"url": url, "queues": queues, "auto_init": True, **settings}))
    return path


@dataclass
class Target:
    """Where a test's queue lives; :meth:`fresh` hands out an empty queue's SDK configuration."""

    kind: str  # "http" or "rdb_compat"
    db_url: str
    db: Database
    base: str = ""
    free: list[tuple[str, str]] = field(default_factory=list)  # http: (queue name, table) unused yet
    tables: list[str] = field(default_factory=list)

    def fresh(self) -> dict[str, Any]:
        """An empty queue: a table of the pool, or (rdb_compat) a new one when none is free."""
        if self.free:
            name, table = self.free.pop(0)
        elif self.kind == "http":
            raise RuntimeError(f"all {SERVICE_QUEUES} queues of the service are in use")
        else:
            name, table = "", "t_" + uuid.uuid4().hex[:16]
            QueueStore(self.db, table).init()
            self.tables.append(table)
        if self.kind == "http":
            return {"url": self.base, "queue": name, "table": table}
        return {"type": "rdb_compat", "url": self.db_url, "table": table}

    def recycle(self, config: dict[str, Any]) -> None:
        """Empty a queue handed out by :meth:`fresh` (creating tables is slow on MariaDB)."""
        with self.db.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {config['table']}"))
        self.free.append((config.get("queue", ""), config["table"]))

    def store(self, config: dict[str, Any]) -> QueueStore:
        """The store behind a queue handed out by :meth:`fresh`: to check what really is stored."""
        return QueueStore(self.db, config["table"])


def database_url(backend: str, directory: Path) -> str:
    if backend in SERVERS:
        return require_server(backend)
    return f"sqlite:///{directory / 'queue.sqlite3'}"


@contextmanager
def open_target(name: str, directory: Path, **service_settings: Any) -> Iterator[Target]:
    """The target named ``<kind>-<database>`` (see TARGETS), torn down on leaving."""
    kind, backend = name.split("-")
    url = database_url(backend, directory)
    db = Database(url)
    target = Target(kind, url, db)
    try:
        if kind == "http":
            prefix = "t_" + uuid.uuid4().hex[:10]
            target.free = [(f"q{i}", f"{prefix}_{i}") for i in range(SERVICE_QUEUES)]
            target.tables = [table for _, table in target.free]
            config = write_queues_config(
                directory / "service.yml", url, dict(target.free), **service_settings
            )
            with service_process(config) as (base, _proc):
                target.base = base
                yield target
        else:
            yield target
    finally:
        for table in target.tables:
            drop_table(db, table)
        db.dispose()


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Each of the four targets, once per test module."""
    with open_target(request.param, tmp_path_factory.mktemp("target")) as found:
        yield found


# -- a real TCP proxy that misbehaves on purpose ---------------------------------------------------

FORWARD = "forward"  # pass the request on and its response back
DROP = "drop"  # close the client's connection without passing the request on
DROP_RESPONSE = "drop_response"  # pass the request on, then close without passing the response back
GATEWAY_TIMEOUT = "gateway_timeout"  # pass the request on, then answer 504 as a gateway whose wait ran out
GATEWAY_TIMEOUT_ANSWER = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class Seen:
    """One HTTP request the proxy received, and what it did with it."""

    head: str
    body: bytes
    action: str

    @property
    def path(self) -> str:
        return self.head.split(" ", 2)[1]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class Proxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream``: the n-th request it receives is
    handled by ``plan[n]`` (FORWARD, DROP, DROP_RESPONSE or GATEWAY_TIMEOUT), every later one is
    forwarded.

    It reads each request off the socket (head and Content-Length body), records it, and sends it
    to the service on a connection of its own with ``Connection: close``, so that the service's
    whole answer is what it reads until the end.
    """

    def __init__(self, upstream: str, plan: list[str] | None = None, port: int = 0) -> None:
        host, _, upstream_port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(upstream_port))
        self.plan = list(plan or [])
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.clients: list[socket.socket] = []
        self.threads: list[threading.Thread] = [threading.Thread(target=self._accept_loop)]
        self.threads[0].start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stopping.set()
        self.threads[0].join(timeout=10)  # accepts no more connections
        with self.lock:
            for conn in self.clients:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads[1:]:
            thread.join(timeout=10)
        self.listener.close()

    def requests_to(self, suffix: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.endswith(suffix)]

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn,))
            with self.lock:
                self.clients.append(conn)
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            with reader, contextlib.suppress(OSError):
                while not self.stopping.is_set():
                    request = _read_request(reader)
                    if request is None:
                        return
                    head, body = request
                    with self.lock:
                        action = self.plan.pop(0) if self.plan else FORWARD
                        self.seen.append(Seen(head, body, action))
                    if action == DROP:
                        return
                    response = self._forward(head, body)
                    if action == DROP_RESPONSE:
                        return
                    conn.sendall(GATEWAY_TIMEOUT_ANSWER if action == GATEWAY_TIMEOUT else response)

    def _forward(self, head: str, body: bytes) -> bytes:
        lines = [line for line in head.split("\r\n") if not line.lower().startswith("connection:")]
        request = "\r\n".join([*lines, "Connection: close"]).encode("latin-1") + b"\r\n\r\n" + body
        with socket.create_connection(self.upstream, timeout=60) as upstream:
            upstream.sendall(request)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_request(reader: Any) -> tuple[str, bytes] | None:
    lines: list[bytes] = []
    while True:
        line = reader.readline(65536)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line.rstrip(b"\r\n"))
    head = b"\r\n".join(lines).decode("latin-1")
    length = 0
    for line in lines[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    return head, reader.read(length) if length else b""


def clean_environ() -> dict[str, str]:
    """This process's environment without any PERFECTQUEUE_* setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}


@pytest.fixture
def config(target: Target) -> Iterator[dict[str, Any]]:
    """The SDK configuration of an empty queue of the module's target."""
    found = target.fresh()
    yield found
    target.recycle(found)


class Pipe:
    """A plain TCP forwarder (for the service's database connections) that can be cut: while
    cut, its connections are broken and new ones are closed as soon as they are accepted."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.cut_off = threading.Event()
        self.stopping = threading.Event()
        self.refused = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.threads = [threading.Thread(target=self._accept_loop)]
        self.threads[0].start()

    def __enter__(self) -> Pipe:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self.threads[0].join(timeout=10)
        self._break_all()
        for thread in self.threads[1:]:
            thread.join(timeout=10)
        self.listener.close()

    def cut(self) -> None:
        self.cut_off.set()
        self._break_all()

    def restore(self) -> None:
        self.cut_off.clear()

    def _break_all(self) -> None:
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            if self.cut_off.is_set():
                conn.close()
                with self.lock:
                    self.refused += 1
                continue
            conn.settimeout(None)
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [conn, upstream]
                pair = [threading.Thread(target=_pump, args=(conn, upstream))]
                pair.append(threading.Thread(target=_pump, args=(upstream, conn)))
                self.threads += pair
            for thread in pair:
                thread.start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    source.close()


def next_time(meta: TaskMetadata) -> int:
    """Unix seconds when a live task's lease ends (leased) or it is due (waiting, scheduled)."""
    instant = meta.lease_expires_at or meta.due_at
    assert instant is not None, meta
    return int(instant.timestamp())
