"""Rows as Ruby PerfectQueue processes write them, and what the service reports and allows for each.

The original's statements are replayed with the columns they write (and nothing else): its fair
acquisition moves ``timeout`` only, its non-fair one writes ``owner = CONNECTION_ID()`` (a
literal small id where the database has no such function), its heartbeat, ``retry!`` and
``release!`` move ``timeout`` only, and its finish clears ``created_at`` and ``resource``. The
table of docs/design.md ("Sharing a table with Ruby PerfectQueue") is what these tests check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import set_timeout
from test_cancel import Q, api
from test_upgrade import ORIGINAL_FINISH, ORIGINAL_INSERT, ORIGINAL_LEASE

import perfectqueue
from perfectqueue.cli import main
from perfectqueue.errors import AlreadyFinishedError, HeldByRubyError, PreemptedError
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.models import instant
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus
from perfectqueue.service.store.model import DELETE_OFFSET, EVENT_HORIZON
from perfectqueue.service.store.owners import CONNECTION_IDS, SLOT

RUBY_NON_FAIR_LEASE = (
    "UPDATE {t} SET timeout=:next, owner={connection} "
    "WHERE {horizon} < timeout AND timeout <= :now AND id IN :ids"
)
"""The original's acquisition without a resource limit: a lease and the connection's id."""
RUBY_HEARTBEAT = "UPDATE {t} SET timeout=:next WHERE id=:id AND created_at IS NOT NULL"
"""The original's heartbeat; its retry! (next: now + retry_wait) and release! (next: now) too."""

RUBY_ALIVE = 300


class Ruby:
    """One Ruby PerfectQueue process on the table: the original's statements, its host's clock
    taken as the database's."""

    def __init__(self, db: Database, table: str) -> None:
        self.db, self.table = db, table

    def now(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(sa.select(self.db.now())).scalar_one())

    def _run(self, sql: str, params: dict[str, Any], expanding: bool = False) -> int:
        statement = sa.text(sql.format(t=self.table, horizon=EVENT_HORIZON, connection=self._connection()))
        if expanding:
            statement = statement.bindparams(sa.bindparam("ids", expanding=True))
        with self.db.engine.begin() as conn:
            return int(conn.execute(statement, params).rowcount)

    def _connection(self) -> str:
        return "4242" if self.db.is_sqlite or self.db.is_postgres else "CONNECTION_ID()"

    def submit(self, task_id: str, run_at: int | None = None) -> None:
        now = self.now()
        row = {
            "id": task_id,
            "timeout": now if run_at is None else run_at,
            "data": b'{"type":"ruby"}',
            "created_at": now,
            "resource": None,
            "max_running": None,
        }
        self._run(ORIGINAL_INSERT, row)

    def acquire(self, *ids: str, fair: bool = True) -> int:
        """Lease these (waiting) tasks as the original does; the lease's end."""
        now = self.now()
        params = {"next": now + RUBY_ALIVE, "now": now, "ids": list(ids)}
        changed = self._run(ORIGINAL_LEASE if fair else RUBY_NON_FAIR_LEASE, params, expanding=True)
        assert changed == len(ids)
        return now + RUBY_ALIVE

    def heartbeat(self, task_id: str, alive_time: int = RUBY_ALIVE) -> int:
        """Also retry! (alive_time: its retry_wait) and release! (0); the timeout it wrote (on a
        finished row it changes nothing, and the original raises PreemptedError)."""
        nxt = self.now() + alive_time
        assert self._run(RUBY_HEARTBEAT, {"next": nxt, "id": task_id}) in (0, 1)
        return nxt

    def expire(self, task_id: str) -> None:
        """Move a task's timeout into the past: what waiting out a lease or a wait does."""
        self._run("UPDATE {t} SET timeout=:past WHERE id=:id", {"past": self.now() - 1, "id": task_id})

    def finish(self, task_id: str) -> int:
        """Rows changed: 0 means the original raises AlreadyFinishedError."""
        return self._run(ORIGINAL_FINISH, {"gone": self.now() - DELETE_OFFSET + 300, "id": task_id})

    def owner(self, task_id: str) -> int:
        t = sa.table(self.table, sa.column("id"), sa.column("owner"))
        with self.db.engine.connect() as conn:
            return int(conn.execute(sa.select(t.c.owner).where(t.c.id == task_id)).scalar_one())


@pytest.fixture
def ruby(database: Database, table_name: str) -> Ruby:
    return Ruby(database, table_name)


@pytest.fixture
def client(db_url: str, table_name: str, database: Database) -> Iterator[Any]:
    with api(db_url, table_name) as served:
        yield served


def at(unix: int) -> str:
    when = instant(unix)
    assert isinstance(when, datetime)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def read(client: Any, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"{Q}/tasks/{task_id}").json()
    return body


def held_by_ruby(client: Any, task_id: str, until: int) -> None:
    task = read(client, task_id)
    assert (task["status"], task["leased"], task["holder"]) == ("running", True, "ruby")
    assert (task["lease_expires_at"], task["due_at"]) == (at(until), None)


def poll(client: Any, **body: Any) -> dict[str, str]:
    """Poll as a worker of this project: id -> lease."""
    tasks = client.post(f"{Q}/poll", json={"max": 10, **body}).json()["tasks"]
    return {t["id"]: t["lease"] for t in tasks}


def code(response: Any) -> tuple[int, str | None]:
    return response.status_code, (response.json().get("code") if response.status_code >= 400 else None)


# -- each row as a Ruby process writes it ------------------------------------------------------


def test_a_ruby_fair_lease_reads_held_by_ruby_and_is_not_cancelled_silently(client: Any, ruby: Ruby) -> None:
    ruby.submit("fair")
    until = ruby.acquire("fair")  # writes no owner: it stays 0
    assert ruby.owner("fair") == 0
    held_by_ruby(client, "fair", until)
    refused = client.post(f"{Q}/cancel", json={"id": "fair"})
    assert code(refused) == (409, "held_by_ruby")
    assert "Ruby" in refused.json()["detail"]
    task = read(client, "fair")
    assert (task["status"], task["cancel_requested"], task["lease_expires_at"]) == (
        "running",
        False,
        at(until),
    )
    assert poll(client) == {}  # nobody else gets it while Ruby's lease runs
    assert ruby.heartbeat("fair") >= until and ruby.finish("fair") == 1  # Ruby's work goes on
    assert read(client, "fair")["status"] == "finished"


def test_a_forced_cancel_ends_a_ruby_held_task_and_the_ruby_calls_then_fail(client: Any, ruby: Ruby) -> None:
    ruby.submit("forced")
    ruby.acquire("forced", fair=False)
    cancelled = client.post(f"{Q}/cancel", json={"id": "forced", "force": True})
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["holder"]) == ("cancelled", None)
    assert ruby.finish("forced") == 0  # the original's finish! raises AlreadyFinishedError
    ruby.heartbeat("forced")  # changes nothing; the original raises PreemptedError (created_at NULL)
    assert read(client, "forced")["status"] == "cancelled"
    assert code(client.post(f"{Q}/cancel", json={"id": "forced", "force": True})) == (409, "already_finished")


def test_a_ruby_non_fair_lease_carries_its_connection_id(client: Any, ruby: Ruby) -> None:
    ruby.submit("nonfair")
    until = ruby.acquire("nonfair", fair=False)
    assert 0 < ruby.owner("nonfair") < CONNECTION_IDS
    held_by_ruby(client, "nonfair", until)
    assert code(client.post(f"{Q}/cancel", json={"id": "nonfair"})) == (409, "held_by_ruby")


@pytest.mark.parametrize("fair", [True, False])
def test_a_ruby_retry_wait_reads_held_by_ruby_until_it_ends(client: Any, ruby: Ruby, fair: bool) -> None:
    """The original's retry! writes what its heartbeat writes: a wait reads as Ruby's lease,
    which ends when the task is deliverable again."""
    ruby.submit("again")
    ruby.acquire("again", fair=fair)
    due = ruby.heartbeat("again", 600)  # retry!(retry_wait: 600)
    held_by_ruby(client, "again", due)
    assert code(client.post(f"{Q}/cancel", json={"id": "again"})) == (409, "held_by_ruby")
    assert poll(client) == {}
    ruby.heartbeat("again", 0)  # release!: waiting now
    task = read(client, "again")
    assert (task["status"], task["leased"], task["holder"]) == ("waiting", False, None)
    assert list(poll(client)) == ["again"]
    assert read(client, "again")["holder"] == "worker"


@pytest.mark.parametrize("fair", [True, False])
def test_stale_calls_of_ours_on_a_task_ruby_took_answer_preempted(
    client: Any, ruby: Ruby, database: Database, table_name: str, fair: bool
) -> None:
    """The original's fair acquisition leaves our lease in owner; the timeout it writes is not
    the one our lease wrote beside it, so the lease no longer holds the task."""
    assert client.post(f"{Q}/submit", json={"id": "took", "type": "x"}).status_code == 201
    lease = poll(client)["took"]
    assert read(client, "took")["holder"] == "worker"
    ours = QueueStore(database, table_name)
    set_timeout(ours, "took", ruby.now() - 1)  # the lease expires
    assert code(client.post(f"{Q}/heartbeat", json={"id": "took", "lease": lease})) == (204, None)
    set_timeout(ours, "took", ruby.now() - 1)  # (nobody took it: its heartbeat applied, as ever)
    until = ruby.acquire("took", fair=fair)
    assert (0 <= ruby.owner("took") - int(lease) < SLOT) is fair  # fair: our lease is still there
    held_by_ruby(client, "took", until)
    for call in ("heartbeat", "retry", "release", "finish"):
        answer = client.post(f"{Q}/{call}", json={"id": "took", "lease": lease})
        assert code(answer) == (409, "preempted"), call
    for call in ("heartbeat-batch", "finish-batch"):
        answer = client.post(f"{Q}/{call}", json={"tasks": [{"id": "took", "lease": lease}]})
        assert answer.status_code == 200, call
        assert [f["code"] for f in answer.json()["failed"]] == ["preempted"], call
    held_by_ruby(client, "took", until)  # nothing changed


def test_a_task_we_scheduled_reads_scheduled_until_a_ruby_worker_takes_it(client: Any, ruby: Ruby) -> None:
    for task_id in ("sched", "kept"):
        assert client.post(f"{Q}/submit", json={"id": task_id, "type": "x"}).status_code == 201
    leases = poll(client)
    for task_id, lease in leases.items():
        assert (
            client.post(f"{Q}/retry", json={"id": task_id, "lease": lease, "retry_wait": 600}).status_code
            == 204
        )
        task = read(client, task_id)
        assert (task["status"], task["leased"], task["holder"]) == ("running", False, None)
    counts = client.get(Q).json()
    assert (counts["leased"], counts["scheduled"]) == (0, 2)
    assert client.post(f"{Q}/cancel", json={"id": "kept"}).json()["status"] == "cancelled"  # nobody holds it

    ruby.expire("sched")  # its wait ends
    until = ruby.acquire("sched")  # the original's fair acquisition keeps our owner
    held_by_ruby(client, "sched", until)
    assert code(client.post(f"{Q}/finish", json={"id": "sched", "lease": leases["sched"]})) == (
        409,
        "preempted",
    )
    assert code(client.post(f"{Q}/cancel", json={"id": "sched"})) == (409, "held_by_ruby")
    counts = client.get(Q).json()
    assert (counts["leased"], counts["scheduled"]) == (1, 0)


def test_a_run_at_of_ours_reads_scheduled_and_one_of_ruby_reads_held(client: Any, ruby: Ruby) -> None:
    """The original writes a run_at as it writes a fair lease (a future timeout, no owner):
    the service cannot tell them apart and reads both as Ruby's."""
    later = ruby.now() + 3600
    assert client.post(f"{Q}/submit", json={"id": "ours", "type": "x", "run_at": later}).status_code == 201
    ruby.submit("theirs", run_at=later)
    ours = read(client, "ours")
    assert (ours["leased"], ours["holder"], ours["due_at"]) == (False, None, at(later))
    held_by_ruby(client, "theirs", later)
    listed = client.get(f"{Q}/tasks", params={"status": "running", "leased": "false"}).json()["tasks"]
    assert [t["id"] for t in listed] == ["ours"]
    listed = client.get(f"{Q}/tasks", params={"status": "running", "leased": "true"}).json()["tasks"]
    assert [(t["id"], t["holder"]) for t in listed] == [("theirs", "ruby")]


def test_counts_and_lists_tell_our_leases_ruby_leases_and_schedules_apart(client: Any, ruby: Ruby) -> None:
    for task_id in ("w1", "r1", "r2", "s1"):
        assert client.post(f"{Q}/submit", json={"id": task_id, "type": "x"}).status_code == 201
    ruby.acquire("r1")
    ruby.acquire("r2", fair=False)
    leases = poll(client)
    assert sorted(leases) == ["s1", "w1"]
    assert (
        client.post(f"{Q}/retry", json={"id": "s1", "lease": leases["s1"], "retry_wait": 600}).status_code
        == 204
    )
    counts = client.get(Q).json()
    assert (counts["waiting"], counts["leased"], counts["scheduled"]) == (0, 3, 1)
    listed = client.get(f"{Q}/tasks", params={"status": "running"}).json()["tasks"]
    assert {t["id"]: (t["leased"], t["holder"]) for t in listed} == {
        "r1": (True, "ruby"),
        "r2": (True, "ruby"),
        "s1": (False, None),
        "w1": (True, "worker"),
    }
    assert code(client.post(f"{Q}/cancel", json={"id": "w1"})) == (200, None)
    assert read(client, "w1")["cancel_requested"] is True  # ours sees the request
    assert ruby.finish("r1") == 1
    finished = read(client, "r1")
    assert (finished["status"], finished["leased"], finished["holder"]) == ("finished", False, None)
    assert code(client.post(f"{Q}/cancel", json={"id": "r1"})) == (409, "already_finished")


def test_a_lease_an_earlier_version_issued_still_holds_its_task(store: QueueStore) -> None:
    """Such a lease is any number below 2**63, written to owner as it is (no timeout stamp):
    its worker's calls go on across an upgrade, and the task reads as held (by Ruby: the owner
    carries no stamp of ours)."""
    store.submit_many([NewTask(i, "x") for i in ("one", "two", "three")])
    acquired = store.acquire(3, 600)
    old = {a.task.id: 7_000_000_000_000_000_001 + i for i, a in enumerate(acquired)}
    with store.db.engine.begin() as conn:
        for task_id, lease in old.items():
            conn.execute(sa.update(store.table).where(store.table.c.id == task_id).values(owner=lease))
    assert {store.get(i).holder for i in old} == {"ruby"}
    store.heartbeat("one", old["one"], 600, data={"step": 2})
    assert store.heartbeat_many([("two", old["two"]), ("three", old["three"])], 600) == [None, None]
    store.finish("one", old["one"])
    assert store.finish_many([("two", old["two"])]) == [None]
    store.retry("three", old["three"], 0)
    assert [a.task.id for a in store.acquire(3, 600)] == ["three"]
    with pytest.raises(AlreadyFinishedError):
        store.finish("one", old["one"])


def test_the_sdk_reads_the_holder_and_forces_a_cancel_and_a_bulk_cancel_never_forces(
    store: QueueStore, db_url: str, table_name: str
) -> None:
    ruby = Ruby(store.db, table_name)
    for task_id in ("r1", "r2"):
        ruby.submit(task_id)
        ruby.acquire(task_id)
    app = create_app(settings_from({"url": db_url, "queues": {"q": {"table": table_name}}}))

    async def scenario() -> None:
        config = {"url": "http://in-process", "queue": "q", "transport": httpx.ASGITransport(app=app)}
        async with perfectqueue.open_async(config) as queue:
            meta = await queue["r1"].metadata()
            assert (meta.is_leased(), meta.holder) == (True, "ruby")
            with pytest.raises(HeldByRubyError):
                await queue["r1"].cancel()
            assert (await queue["r1"].cancel(force=True)).is_cancelled()
            async with httpx.AsyncClient(transport=config["transport"], base_url="http://in-process") as raw:
                body = {"action": "cancel", "status": "running"}
                answer = (await raw.post(f"{Q}/bulk", json=body)).json()
            assert answer["successful"] == []
            assert [(f["id"], f["code"]) for f in answer["failed"]] == [("r2", "held_by_ruby")]

    try:
        asyncio.run(scenario())
    finally:
        for db in app.state.runtime.databases.values():
            db.dispose()
    assert store.get("r2").status is TaskStatus.RUNNING and not store.get("r2").cancel_requested


def test_the_cli_refuses_a_ruby_held_task_unless_forced(
    store: QueueStore, db_url: str, table_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ruby = Ruby(store.db, table_name)
    ruby.submit("r")
    ruby.acquire("r", fair=False)
    direct = ["--url", db_url, "--table", table_name, "--backend", "rdb_compat"]
    assert main(["cancel", "r", *direct]) == 2
    assert "held by a Ruby PerfectQueue process" in capsys.readouterr().err
    assert store.get("r").holder == "ruby"
    assert main(["cancel", "r", "--force", *direct]) == 0
    assert "cancelled r" in capsys.readouterr().out
    assert store.get("r").status is TaskStatus.CANCELLED


def test_no_other_number_holds_a_task_a_lease_of_ours_holds(store: QueueStore) -> None:
    """The owner of a leased row is its lease stamped with the timeout: that owner itself,
    presented as a lease (as one of an earlier version is), holds nothing."""
    store.submit(NewTask("t", "x"))
    [got] = store.acquire(1, 600)
    owner = Ruby(store.db, store.table.name).owner("t")
    assert owner != got.lease
    for forged in (owner, got.lease + 1, got.lease - SLOT):
        with pytest.raises(PreemptedError):
            store.heartbeat("t", forged, 600)
        [answer] = store.heartbeat_many([("t", forged)], 600)
        assert isinstance(answer, PreemptedError)
        with pytest.raises(PreemptedError):
            store.finish("t", forged)
    store.finish("t", got.lease)
    with pytest.raises(AlreadyFinishedError):
        store.finish("t", got.lease)
