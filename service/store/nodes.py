"""Several nodes of one Galera cluster behind one database url: a sticky single writer.

A url may list several hosts, ``mysql://user@node1:3306,node2:3306,node3:3306/db``. The store
then writes through one node at a time, the first in the list that is up and synced, and moves
to the next when the one in use fails (connection refused or lost, or a node that left the
primary component: error 1047). While it is not on the first node, a background probe checks
the nodes before it every few seconds and moves back to the first one that is synced again, so
that every service replica given the same list ends on the same node: that keeps ``GET_LOCK``
(local to one node) and certification conflicts to what a single server would have.

A node that hangs (frozen, its connections open but silent) fails no statement until the
statement deadline; a watcher (one thread per database, whatever the load) checks the node in use
every second on a fresh connection of its own (connect and one status query within
``WATCH_TIMEOUT``). When the node does not answer in time, or answers that it is not usable, the
store moves to the next node at once, and cuts the connections that transactions hold on the node
left: they fail at once (connection lost) and are repeated on the next node (see
``Database.transaction`` for what may be repeated), instead of waiting for their deadline.

Each node has an engine of its own; the sessions of a Galera node get ``wsrep_sync_wait`` (causal
reads, see :data:`DEFAULT_SYNC_WAIT`) unless the url sets it (``?wsrep_sync_wait=0`` turns it off).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ...errors import ConfigError

log = logging.getLogger("perfectqueue.store")

NODE_ERRNOS = {1047, 1053, 1180, 1927, 2002, 2003, 2006, 2013, 2055}
"""The node, not the statement, is the problem: WSREP not ready (non-primary), server shutting
down, a commit refused (1180: on a Galera node, "not connected to Primary Component" while
appending the write set; the commit failed, so it is repeated on the next node), connection
killed, cannot connect, server gone, connection lost."""

DEFAULT_SYNC_WAIT = 3
"""``wsrep_sync_wait`` bits 1 (reads) and 2 (UPDATE/DELETE): a statement first waits until the node
has applied every write the cluster committed before it, so a finish, heartbeat or get that
reaches another node than the poll or submit before it still sees that write."""

SYNCED = "4"  # wsrep_local_state
NOT_ONE_CLUSTER = 1105  # the errno of the connect hook's refusal: the url's hosts are not one cluster
PROBE_INTERVAL = 3.0
WATCH_INTERVAL = 1.0
WATCH_TIMEOUT = 2.0
"""Seconds the watcher's check of the node in use may take (connect, then one status query)."""
SETTLE = 2.0
"""Seconds a node before the current one must stay usable before the store moves back to it: a
thawed node reports itself synced about a second before it is in the primary component again."""
SYNC_WAIT = re.compile(r"[?&]wsrep_sync_wait=(\d+)")


def split_hosts(url: str) -> list[str]:
    """One url per host of ``url`` (a single one when it lists one host)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return [url]
    at = rest.split("?", 1)[0].rfind("@")
    userinfo, hosts_and_path = rest[: at + 1], rest[at + 1 :]
    hosts, slash, path = hosts_and_path.partition("/")
    if "," not in hosts:
        return [url]
    return [f"{scheme}://{userinfo}{host.strip()}{slash}{path}" for host in hosts.split(",") if host.strip()]


def sync_wait_of(url: str) -> tuple[str, int | None]:
    """The url without its ``wsrep_sync_wait`` parameter, and that parameter's value."""
    match = SYNC_WAIT.search(url)
    if match is None:
        return url, None
    rest = url[: match.start()] + url[match.end() :]
    if "?" not in rest and "&" in rest:
        rest = rest.replace("&", "?", 1)
    return rest, int(match.group(1))


@dataclass
class Node:
    index: int
    url: str
    engine: Engine
    galera: bool | None = None  # learnt on the first connection
    busy: set[Any] = field(default_factory=set)  # the pool entries checked out now


@dataclass
class NodeSet:
    """The nodes of one url and which of them the store writes through now."""

    nodes: list[Node]
    current: int = 0
    switches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    cluster: str | None = None  # wsrep_cluster_state_uuid of the first node seen
    _probing: bool = False
    _closing: threading.Event = field(default_factory=threading.Event)

    @property
    def _closed(self) -> bool:
        return self._closing.is_set()

    @property
    def several(self) -> bool:
        return len(self.nodes) > 1

    def active(self) -> Node:
        node = self.nodes[self.current]
        if node.index != 0:
            self._probe_soon()
        return node

    def failed(self, node: Node, reason: str) -> None:
        """``node`` failed a transaction: move to the next node (if nobody has moved already)."""
        with self._lock:
            if self.current != node.index or not self.several:
                return
            self.current = (node.index + 1) % len(self.nodes)
            self.switches += 1
        log.warning(
            "database node %d failed (%s): now writing through node %d",
            node.index + 1,
            reason,
            self.current + 1,
        )
        node.engine.dispose()

    def watch(self, connect: Callable[[Node, float], Any]) -> None:
        """Start the watcher: ``connect(node, seconds)`` opens a driver connection to ``node``
        outside its pool, every timeout ``seconds``, or raises."""
        if self.several:
            threading.Thread(target=self._watch, args=(connect,), name="pq-node-watch", daemon=True).start()

    def _watch(self, connect: Callable[[Node, float], Any]) -> None:
        while not self._closing.wait(WATCH_INTERVAL):
            node = self.nodes[self.current]
            why = liveness(node, connect)
            if why is not None and self.is_current(node):
                self.failed(node, why)
                cut(node)

    def close(self) -> None:
        self._closing.set()
        for node in self.nodes:
            node.engine.dispose()

    def _probe_soon(self) -> None:
        with self._lock:
            if self._probing or self._closed:
                return
            self._probing = True
        threading.Thread(target=self._probe_preferred, name="pq-node-probe", daemon=True).start()

    def check(self) -> None:
        """At start: every node that answers is a Galera node of one cluster, else ConfigError
        naming the odd one. A node that does not answer is checked when it is first used."""
        for node in self.nodes:
            try:
                with node.engine.connect():
                    pass
            except SQLAlchemyError as exc:
                args = getattr(getattr(exc, "orig", None), "args", ())
                if args and args[0] == NOT_ONE_CLUSTER:
                    raise ConfigError(f"the database url lists several hosts, but {args[1]}") from None
                log.warning(
                    "database node %d does not answer; checked when first used: %s", node.index + 1, exc
                )

    def learn(self, node: Node, cluster: str) -> str | None:
        """Why ``node`` may not be used with the others (its cluster is not theirs), or None."""
        with self._lock:
            self.cluster = self.cluster or cluster
        if cluster != self.cluster:
            return f"node {node.index + 1} belongs to another cluster (wsrep_cluster_state_uuid {cluster})"
        return None

    def is_current(self, node: Node) -> bool:
        return self.nodes[self.current] is node

    def _probe_preferred(self) -> None:
        """After a pause, move back to the first node before the current one that is usable, and
        still usable ``SETTLE`` seconds later."""
        try:
            time.sleep(PROBE_INTERVAL)
            for node in self.nodes[: self.current]:
                if not self._closed and self._rejoined(node) and self._settled(node):
                    with self._lock:
                        left = self.nodes[self.current] if node.index < self.current else None
                        if left is not None:
                            log.warning("database node %d is synced again: back to it", node.index + 1)
                            self.current = node.index
                            self.switches += 1
                    if left is not None:
                        left.engine.dispose()  # its idle connections; the busy ones close at check-in
                    return
        finally:
            with self._lock:
                self._probing = False

    def _settled(self, node: Node) -> bool:
        time.sleep(SETTLE)
        return not self._closed and self._rejoined(node)

    def _rejoined(self, node: Node) -> bool:
        """May ``node`` be written through, and is it in the node in use's primary component (the
        same ``wsrep_cluster_conf_id``)? A thawed node's own view is stale for a moment: it says
        synced and Primary before it has learnt that the others evicted it."""
        view = usable_view(node.engine)
        current = usable_view(self.nodes[self.current].engine)
        return view is not None and (current is None or view == current)


def usable_view(engine: Engine) -> str | None:
    """The node's ``wsrep_cluster_conf_id`` (its view of the cluster's membership) when it answers
    and may be written through (see :func:`unusable`), else None."""
    try:
        with engine.connect() as conn:
            status = galera_status(conn.connection.dbapi_connection)
    except SQLAlchemyError:
        return None
    if status is None or unusable(status) is not None:
        return None
    return status.get("wsrep_cluster_conf_id", "")


def liveness(node: Node, connect: Callable[[Node, float], Any]) -> str | None:
    """Why ``node`` is no longer to be written through (None: it answered, usable, in time)."""
    started = time.monotonic()
    try:
        conn = connect(node, WATCH_TIMEOUT)
        try:
            status = galera_status(conn)
        finally:
            conn.close()
    except Exception as exc:  # whatever the driver raises: the node did not answer
        return f"no answer to a liveness check within {WATCH_TIMEOUT:g} s: {exc}"
    if time.monotonic() - started > WATCH_TIMEOUT:
        return f"a liveness check took {time.monotonic() - started:.1f} s"
    return None if status is None else unusable(status)


def cut(node: Node) -> None:
    """End the connections that transactions hold on ``node`` now: a read on one fails at once
    (connection lost), and the pool discards it."""
    for record in list(node.busy):
        sock = getattr(record.dbapi_connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)


def galera_status(dbapi_conn: Any) -> dict[str, str] | None:
    """A Galera node's ``wsrep_local_state``, ``wsrep_cluster_status``, ``wsrep_ready``,
    ``wsrep_cluster_state_uuid`` and ``wsrep_cluster_conf_id``; None when the server is no Galera
    node."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
        row = cursor.fetchone()
        if row is None or str(row[1]).upper() != "ON":
            return None
        cursor.execute(
            "SHOW STATUS WHERE Variable_name IN "
            "('wsrep_local_state', 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_cluster_state_uuid', "
            "'wsrep_cluster_conf_id')"
        )
        return {str(name): str(value) for name, value in cursor.fetchall()}
    finally:
        cursor.close()


def unusable(status: dict[str, str]) -> str | None:
    """Why a Galera node may not be written through (None: synced, in the primary component and
    ready)."""
    state = status.get("wsrep_local_state", "0")
    if state != SYNCED:
        return f"not synced (wsrep_local_state {state})"
    if status.get("wsrep_cluster_status") != "Primary":
        return f"not in the primary component (wsrep_cluster_status {status.get('wsrep_cluster_status')})"
    if status.get("wsrep_ready", "").upper() != "ON":
        return "not ready (wsrep_ready OFF)"
    return None


def on_connect(
    node: Node, nodes: NodeSet, sync_wait: int | None, error: Callable[[int, str], Exception]
) -> Callable[[Any, Any], None]:
    """The pool's connect hook: learn whether the node is Galera; when the url lists several,
    refuse one of another cluster and one that is not usable; set ``wsrep_sync_wait``."""

    def hook(dbapi_conn: Any, _record: Any) -> None:
        status = galera_status(dbapi_conn)
        node.galera = status is not None
        if status is None:
            if nodes.several:
                raise error(NOT_ONE_CLUSTER, f"node {node.index + 1} is no Galera node")
            return
        if nodes.several:
            foreign = nodes.learn(node, status.get("wsrep_cluster_state_uuid", ""))
            if foreign is not None:
                raise error(NOT_ONE_CLUSTER, foreign)
            why = unusable(status)
            if why is not None:
                raise error(1047, f"node {node.index + 1} is {why}")
        cursor = dbapi_conn.cursor()
        try:
            wait = DEFAULT_SYNC_WAIT if sync_wait is None else sync_wait
            cursor.execute(f"SET SESSION wsrep_sync_wait = {wait}")
        finally:
            cursor.close()

    return hook


def attach(engine: Engine, node: Node, nodes: NodeSet, sync_wait: int | None) -> None:
    """Hook ``on_connect`` into the engine (its refusals are the driver's own OperationalError, so
    that the store handles them as it handles the server's); keep account of the connections
    checked out (for :func:`cut`); and close a connection that comes back to the pool of a node
    the store has left, so that none stays open on it."""
    error = engine.dialect.loaded_dbapi.OperationalError
    sa.event.listen(engine, "connect", on_connect(node, nodes, sync_wait, error))
    if nodes.several:

        def checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            node.busy.add(record)

        def checkin(_dbapi_conn: Any, record: Any) -> None:
            node.busy.discard(record)
            if not nodes.is_current(node) and record.dbapi_connection is not None:
                record.invalidate()

        sa.event.listen(engine, "checkout", checkout)
        sa.event.listen(engine, "checkin", checkin)
