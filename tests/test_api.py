"""The HTTP API, in process against the real app on each backend: every endpoint and its errors.

Every error answer is checked as a problem (RFC 9457) with its stable code, and every rejected
request is checked to have changed nothing.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from conftest import drop_table, expire_lease
from servers import running_service, write_config

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database, QueueStore

with warnings.catch_warnings():
    # starlette asks for httpx2 (not a dependency of this project) with a warning at import.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

Q = "/v1/queues/q"
JSON = {"content-type": "application/json"}
SPECIAL_IDS = [
    "a/b",
    "a/../b",
    "./x",
    "1.5",
    "100%",
    "%2F",
    "with space",
    " lead and trail ",
    "q?x=1&y#frag",
    "ünïcödé-タスク",
    "emoji-🎉🧪",
    "back\\slash",
]


@pytest.fixture
def make_client(db_url: str, table_name: str) -> Iterator[Callable[..., TestClient]]:
    """A client of a fresh app serving queue ``q`` on a fresh table; extra settings as keywords."""
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = create_app(
            settings_from(
                {"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True, **settings}
            )
        )
        client = TestClient(app).__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# -- helpers ---------------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an application/problem+json answer with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:perfectqueue:problem:{code}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def submit(client: TestClient, task_id: str, task_type: str = "t", **fields: Any) -> None:
    response = client.post(f"{Q}/submit", json={"id": task_id, "type": task_type, **fields})
    assert response.status_code == 201, response.text
    assert response.json() == {"id": task_id}


def poll(client: TestClient, max_tasks: int = 1, **fields: Any) -> list[dict[str, Any]]:
    response = client.post(f"{Q}/poll", json={"max": max_tasks, **fields})
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


def acquire(client: TestClient, task_id: str, **fields: Any) -> str:
    """Submit a task and lease it; returns the lease."""
    submit(client, task_id)
    (task,) = poll(client, **fields)
    assert task["id"] == task_id
    lease: str = task["lease"]
    return lease


def task_path(task_id: str) -> str:
    """The task's url path, percent-encoded as a client sends it.

    starlette's TestClient decodes the path twice (httpx's ``url.path`` is decoded already and it
    unquotes it again), so in process every '%' is escaped once more; a real server, in
    :func:`test_special_ids_through_a_real_server`, gets the plain ``quote(task_id, safe="")``.
    """
    return f"{Q}/tasks/{quote(task_id, safe='').replace('%', '%25')}"


def unix(instant: str) -> int:
    """An RFC 3339 instant of the API as unix seconds."""
    return int(datetime.fromisoformat(instant).timestamp())


def get(client: TestClient, task_id: str) -> dict[str, Any]:
    response = client.get(task_path(task_id))
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def counts(client: TestClient) -> tuple[int, int, int]:
    body = client.get(Q).json()
    return body["waiting"], body["leased"] + body["scheduled"], body["finished"]


def everything(client: TestClient) -> list[dict[str, Any]]:
    """Every task of the queue as the service reports it (one page is enough for these tests)."""
    body = client.get(f"{Q}/tasks", params={"limit": 1000}).json()
    assert body["next_cursor"] is None
    tasks: list[dict[str, Any]] = body["tasks"]
    return tasks


def store_of(client: TestClient) -> QueueStore:
    store: QueueStore = client.app.state.runtime.queues["q"].store
    return store


# -- health, unknown paths and queues ----------------------------------------------------------


def test_livez_and_readyz(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1"), ("POST", "/v1/queues/q/nope"), ("GET", "/v2/queues/q")],
)
def test_unknown_endpoint_is_a_problem(client: TestClient, method: str, path: str) -> None:
    assert_problem(client.request(method, path), 404, "unknown_endpoint")


def test_wrong_method_is_a_problem(client: TestClient) -> None:
    assert_problem(client.get(f"{Q}/submit"), 405, "method_not_allowed")
    assert everything(client) == []


UNKNOWN_QUEUE_CALLS = [
    ("GET", "", None),
    ("POST", "/submit", {"id": "a", "type": "t"}),
    ("POST", "/submit-batch", {"tasks": [{"id": "a", "type": "t"}]}),
    ("POST", "/poll", {}),
    ("POST", "/heartbeat", {"id": "a", "lease": "1"}),
    ("POST", "/finish", {"id": "a", "lease": "1"}),
    ("POST", "/finish-batch", {"tasks": [{"id": "a", "lease": "1"}]}),
    ("POST", "/retry", {"id": "a", "lease": "1"}),
    ("POST", "/release", {"id": "a", "lease": "1"}),
    ("POST", "/force-finish", {"id": "a"}),
    ("GET", "/tasks", None),
    ("GET", "/tasks/a", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), UNKNOWN_QUEUE_CALLS)
def test_unknown_queue_on_every_endpoint(
    client: TestClient, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    submit(client, "a")
    response = client.request(method, f"/v1/queues/other{suffix}", json=body)
    assert_problem(response, 404, "unknown_queue")
    assert [(t["id"], t["status"]) for t in everything(client)] == [("a", "waiting")]


def test_a_long_queue_name_is_unknown_too(client: TestClient) -> None:
    for length in (65, 300, 5000):
        body = assert_problem(client.get("/v1/queues/" + "x" * length), 404, "unknown_queue")
        assert len(body["detail"]) < 200  # the name is not echoed whole


def test_queues_and_their_counts(client: TestClient) -> None:
    states = ("waiting", "leased", "scheduled", "finished", "dead", "cancelled", "dead_last_hour")
    empty = {**dict.fromkeys(states, 0), "paused": False, "paused_at": None}
    assert client.get("/v1/queues").json() == {
        "queues": [{"name": "q", **empty, "oldest_waiting_age": None, "capped": []}]
    }
    for i in range(4):
        submit(client, f"t{i}")
    (first,) = poll(client)
    poll(client)
    assert client.post(f"{Q}/finish", json={"id": first["id"], "lease": first["lease"]}).status_code == 204
    info = client.get(Q).json()
    assert info.pop("oldest_waiting_age") >= 0
    assert info == {
        "name": "q",
        **empty,
        **{"waiting": 2, "leased": 1, "finished": 1},
        "capped": [],
    }
    (listed,) = client.get("/v1/queues").json()["queues"]
    assert listed.pop("oldest_waiting_age") >= 0  # it may cross a second between the two calls
    assert listed == info


# -- submit and get --------------------------------------------------------------------------


def test_submit_then_get_returns_what_was_submitted(client: TestClient) -> None:
    data = {"to": "a@example.com", "n": [1, 2.5, None, True], "nested": {"ü": "🎉"}}
    submit(client, "mail-1", "send_mail", data=data, user="acme", max_running=3)
    task = get(client, "mail-1")
    assert task["id"] == "mail-1"
    assert task["type"] == "send_mail"
    assert task["data"] == data
    assert task["user"] == "acme"
    assert task["max_running"] == 3
    assert task["status"] == "waiting"
    assert task["compression"] is None
    assert task["created_at"].endswith("Z") and unix(task["due_at"]) <= unix(task["created_at"]) + 1
    assert (task["lease_expires_at"], task["finished_at"], task["expires_at"]) == (None, None, None)
    assert "timeout" not in task  # the table's encoding stays in the table


def test_submit_with_gzip_compression_round_trips(client: TestClient) -> None:
    submit(client, "z", data={"blob": "x" * 5000}, compression="gzip")
    task = get(client, "z")
    assert task["compression"] == "gzip"
    assert task["data"] == {"blob": "x" * 5000}
    (polled,) = poll(client)
    assert polled["data"] == {"blob": "x" * 5000}


def test_submit_with_run_at_in_the_future_is_not_delivered(client: TestClient) -> None:
    run_at = int(time.time()) + 3600
    submit(client, "later", run_at=run_at)
    assert unix(get(client, "later")["due_at"]) == run_at
    assert poll(client) == []
    assert counts(client)[0] == 0


def test_submit_twice_is_already_exists_and_keeps_the_first(client: TestClient) -> None:
    submit(client, "a", data={"v": 1})
    response = client.post(f"{Q}/submit", json={"id": "a", "type": "other", "data": {"v": 2}})
    assert_problem(response, 409, "already_exists")
    task = get(client, "a")
    assert (task["type"], task["data"]) == ("t", {"v": 1})


def test_submit_after_finish_is_already_exists_while_retained(client: TestClient) -> None:
    lease = acquire(client, "a")
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": lease}).status_code == 204
    assert_problem(client.post(f"{Q}/submit", json={"id": "a", "type": "t"}), 409, "already_exists")
    assert get(client, "a")["status"] == "finished"
    assert poll(client) == []


def test_get_unknown_task_is_not_found(client: TestClient) -> None:
    assert_problem(client.get(f"{Q}/tasks/nope"), 404, "not_found")


def test_ids_differing_in_case_or_trailing_space_are_distinct(client: TestClient) -> None:
    for task_id in ("abc", "ABC", "abc "):
        submit(client, task_id, data={"id": task_id})
    for task_id in ("abc", "ABC", "abc "):
        assert get(client, task_id)["data"] == {"id": task_id}
    assert_problem(client.get(task_path("abc  ")), 404, "not_found")


LONG_ID = "x" * 256
INVALID_SUBMITS: list[tuple[str, bytes | dict[str, Any]]] = [
    ("malformed JSON", b'{"id": "a", "type": '),
    ("not an object", b'[{"id": "a", "type": "t"}]'),
    ("empty body", b""),
    ("id missing", {"type": "t"}),
    ("type missing", {"id": "a"}),
    ("id is a number", {"id": 42, "type": "t"}),
    ("type is a list", {"id": "a", "type": ["t"]}),
    ("data is a list", {"id": "a", "type": "t", "data": [1]}),
    ("data is a string", {"id": "a", "type": "t", "data": "{}"}),
    ("max_running is text", {"id": "a", "type": "t", "max_running": "many"}),
    ("max_running is fractional", {"id": "a", "type": "t", "max_running": 1.5}),
    ("max_running is zero", {"id": "a", "type": "t", "max_running": 0}),
    ("user is a number", {"id": "a", "type": "t", "user": 7}),
    ("extra field", {"id": "a", "type": "t", "priority": 1}),
    ("data holds 'type'", {"id": "a", "type": "t", "data": {"type": "x"}}),
    ("data holds NaN", b'{"id": "a", "type": "t", "data": {"x": NaN}}'),
    ("data holds Infinity", b'{"id": "a", "type": "t", "data": {"x": Infinity}}'),
    ("data holds an unpaired surrogate", b'{"id": "a", "type": "t", "data": {"x": "\\ud800"}}'),
    ("data key is an unpaired surrogate", b'{"id": "a", "type": "t", "data": {"\\udc00": 1}}'),
    ("id unpaired surrogate", b'{"id": "\\ud800", "type": "t"}'),
    ("empty id", {"id": "", "type": "t"}),
    ("id of 256 bytes", {"id": LONG_ID, "type": "t"}),
    ("id of 128 chars but 256 bytes", {"id": "é" * 128, "type": "t"}),
    ("id of 64 emoji (256 bytes)", {"id": "🎉" * 64, "type": "t"}),
    ("type over 255 bytes", {"id": "a", "type": "t" * 256}),
    ("user over 255 bytes", {"id": "a", "type": "t", "user": "ü" * 128}),
    ("NUL in id", {"id": "a\x00b", "type": "t"}),
    ("newline in id", {"id": "a\nb", "type": "t"}),
    ("tab in id", {"id": "a\tb", "type": "t"}),
    ("DEL in id", {"id": "a\x7fb", "type": "t"}),
    ("C1 control in id", {"id": "a\x85b", "type": "t"}),
    ("control in type", {"id": "a", "type": "t\x1b"}),
    ("control in user", {"id": "a", "type": "t", "user": "u\r"}),
    ("run_at beyond 2^31-1", {"id": "a", "type": "t", "run_at": 2**31}),
    ("run_at in 1970", {"id": "a", "type": "t", "run_at": 1}),
    ("run_at fractional", {"id": "a", "type": "t", "run_at": 1_900_000_000.5}),
    ("max_running beyond 2^31-1", {"id": "a", "type": "t", "max_running": 2**31}),
    ("unknown compression", {"id": "a", "type": "t", "compression": "zstd"}),
]


@pytest.mark.parametrize("body", [b for _, b in INVALID_SUBMITS], ids=[name for name, _ in INVALID_SUBMITS])
def test_invalid_submit_is_rejected_and_changes_nothing(
    client: TestClient, body: bytes | dict[str, Any]
) -> None:
    submit(client, "existing", data={"v": 1})
    before = everything(client)
    if isinstance(body, bytes):
        response = client.post(f"{Q}/submit", content=body, headers=JSON)
    else:
        response = client.post(f"{Q}/submit", json=body)
    malformed = body == b'{"id": "a", "type": '  # not JSON at all: the body cannot be read
    assert_problem(response, *((400, "bad_request") if malformed else (422, "invalid")))
    assert everything(client) == before
    assert counts(client) == (1, 0, 0)


def test_id_of_255_bytes_is_accepted(client: TestClient) -> None:
    for task_id in ("x" * 255, "é" * 127 + "x", "🎉" * 63 + "abc"):
        submit(client, task_id)
        assert get(client, task_id)["id"] == task_id


# -- ids that need care in paths and SQL ----------------------------------------------------


STORED_ELSEWHERE = ["タ" * 200, "tab\there", "line\nbreak", "del\x7f"]
"""Ids the original's table may hold that a submit here refuses: 602 bytes of CJK (VARCHAR(255)
counts characters), control characters."""


@pytest.mark.parametrize("task_id", STORED_ELSEWHERE, ids=["cjk-602-bytes", "tab", "newline", "del"])
def test_an_id_another_writer_stored_can_be_read_cancelled_and_requeued(
    client: TestClient, db_url: str, table_name: str, task_id: str
) -> None:
    assert_problem(client.post(f"{Q}/submit", json={"id": task_id, "type": "t"}), 422, "invalid")
    db = Database(db_url)
    with db.engine.begin() as conn:  # as the original inserts a task
        conn.execute(
            sa.text(
                f"INSERT INTO {table_name} (id, timeout, data, created_at, resource, max_running) "
                "VALUES (:id, :now, :data, :now, NULL, NULL)"
            ),
            {"id": task_id, "now": int(time.time()) - 5, "data": '{"type":"t"}'},
        )
    db.dispose()
    assert get(client, task_id)["id"] == task_id
    assert client.post(f"{Q}/cancel", json={"id": task_id}).json()["status"] == "cancelled"
    assert client.post(f"{Q}/requeue", json={"id": task_id}).status_code == 409  # cancelled, not dead
    assert_problem(client.post(f"{Q}/force-finish", json={"id": task_id}), 409, "already_finished")
    assert [t["id"] for t in everything(client)] == [task_id]


@pytest.mark.parametrize("task_id", SPECIAL_IDS)
def test_special_ids_work_on_every_endpoint(client: TestClient, task_id: str) -> None:
    submit(client, task_id, data={"k": task_id})
    assert get(client, task_id)["data"] == {"k": task_id}
    assert [t["id"] for t in everything(client)] == [task_id]

    (task,) = poll(client)
    assert task["id"] == task_id
    lease = {"id": task_id, "lease": task["lease"]}
    assert client.post(f"{Q}/heartbeat", json={**lease, "data": {"k": 2}}).status_code == 204
    assert client.post(f"{Q}/release", json=lease).status_code == 204
    (task,) = poll(client)
    lease = {"id": task_id, "lease": task["lease"]}
    assert client.post(f"{Q}/retry", json={**lease, "retry_wait": 0}).status_code == 204
    (task,) = poll(client)
    lease = {"id": task_id, "lease": task["lease"]}
    assert client.post(f"{Q}/finish", json=lease).status_code == 204
    assert get(client, task_id)["status"] == "finished"
    assert_problem(client.post(f"{Q}/force-finish", json={"id": task_id}), 409, "already_finished")

    other = task_id + "-2"
    response = client.post(f"{Q}/submit-batch", json={"tasks": [{"id": other, "type": "t"}]})
    assert response.json() == {"successful": [{"id": other}], "failed": []}
    (task,) = poll(client)
    response = client.post(f"{Q}/finish-batch", json={"tasks": [{"id": other, "lease": task["lease"]}]})
    assert response.json() == {"successful": [{"id": other}], "failed": []}
    assert client.post(f"{Q}/force-finish", json={"id": task_id + "-3"}).status_code == 404
    assert [(t["id"], t["status"]) for t in everything(client)] == [
        (task_id, "finished"),
        (other, "finished"),
    ]


def test_special_ids_through_a_real_server(db_url: str, table_name: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "perfectqueue.yml", db_url, table_name)
    try:
        with running_service(config) as base, httpx.Client(base_url=base + Q, timeout=10) as http:
            for task_id in SPECIAL_IDS:
                assert (
                    http.post(
                        "/submit", json={"id": task_id, "type": "t", "data": {"k": task_id}}
                    ).status_code
                    == 201
                )
                response = http.get(f"/tasks/{quote(task_id, safe='')}")
                assert response.status_code == 200, (task_id, response.text)
                assert (response.json()["id"], response.json()["data"]) == (task_id, {"k": task_id})
            response = http.get(f"/tasks/{quote('%2F-2', safe='')}")
            assert_problem(response, 404, "not_found")
            assert "'%2F-2'" in response.json()["detail"]
    finally:
        if not db_url.startswith("sqlite"):
            db = Database(db_url)
            drop_table(db, table_name)
            db.dispose()


# -- submit-batch ----------------------------------------------------------------------------


def test_submit_batch_reports_each_item(client: TestClient) -> None:
    submit(client, "old")
    tasks = [
        {"id": "new-1", "type": "t", "data": {"i": 1}},
        {"id": "old", "type": "t"},
        {"id": "new-2", "type": "t", "user": "acme"},
        {"id": "new-1", "type": "t"},
        {"id": "bad", "type": "t", "data": {"type": "x"}},
    ]
    response = client.post(f"{Q}/submit-batch", json={"tasks": tasks})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["successful"] == [{"id": "new-1"}, {"id": "new-2"}]
    assert sorted((f["id"], f["code"]) for f in body["failed"]) == [
        ("bad", "invalid"),
        ("new-1", "already_exists"),
        ("old", "already_exists"),
    ]
    assert all(f["detail"] for f in body["failed"])
    assert [t["id"] for t in everything(client)] == ["new-1", "new-2", "old"]
    assert get(client, "new-1")["data"] == {"i": 1}
    assert get(client, "new-2")["user"] == "acme"


def test_submit_batch_of_1000_is_stored(client: TestClient) -> None:
    tasks = [{"id": f"b{i:04d}", "type": "t"} for i in range(1000)]
    response = client.post(f"{Q}/submit-batch", json={"tasks": tasks})
    assert response.status_code == 200
    assert len(response.json()["successful"]) == 1000
    assert response.json()["failed"] == []
    assert counts(client) == (1000, 0, 0)


@pytest.mark.parametrize(
    "tasks",
    [
        [{"id": f"b{i}", "type": "t"} for i in range(1001)],
        [],
        [{"id": "ok", "type": "t"}, {"id": "extra", "type": "t", "x": 1}],
        [{"id": "ok", "type": "t"}, {"id": "x" * 256, "type": "t"}],
    ],
    ids=["1001 items", "no items", "an item with an extra field", "an id too long"],
)
def test_invalid_submit_batch_stores_nothing(client: TestClient, tasks: list[dict[str, Any]]) -> None:
    response = client.post(f"{Q}/submit-batch", json={"tasks": tasks})
    assert_problem(response, 422, "invalid")
    assert everything(client) == []


# -- poll ------------------------------------------------------------------------------------


def test_poll_leases_at_most_max_oldest_first(client: TestClient) -> None:
    for i in range(5):
        submit(client, f"t{i}", run_at=1_400_000_000 + i)
    tasks = poll(client, 3)
    assert [t["id"] for t in tasks] == ["t0", "t1", "t2"]
    assert all(t["status"] == "running" for t in tasks)
    assert len({t["lease"] for t in tasks}) == 1
    assert [t["id"] for t in poll(client, 100)] == ["t3", "t4"]
    assert poll(client, 100) == []
    assert counts(client) == (0, 5, 0)


def test_poll_alive_time_defaults_to_the_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(alive_time=1234)
    submit(client, "a")
    submit(client, "b")
    (task,) = poll(client)
    now = int(time.time())
    assert now + 1234 - 5 <= unix(task["lease_expires_at"]) <= now + 1234 + 5
    (task,) = poll(client, alive_time=60)
    assert now + 60 - 5 <= unix(task["lease_expires_at"]) <= now + 60 + 5
    assert get(client, "b")["lease_expires_at"] == task["lease_expires_at"]


def test_poll_on_an_empty_queue_waits_then_returns_nothing(client: TestClient) -> None:
    started = time.monotonic()
    assert poll(client, wait=0.3) == []
    assert time.monotonic() - started >= 0.25


@pytest.mark.parametrize(
    "body",
    [
        {"wait": 20.5},
        {"wait": 301},
        {"wait": -1},
        {"max": 0},
        {"max": 101},
        {"max": "two"},
        {"alive_time": -1},
        {"alive_time": 0},
        {"alive_time": 365 * 24 * 3600 + 1},
        {"alive_time": 1.5},
        {"extra": 1},
    ],
)
def test_invalid_poll_leases_nothing(client: TestClient, body: dict[str, Any]) -> None:
    submit(client, "a")
    assert_problem(client.post(f"{Q}/poll", json=body), 422, "invalid")
    assert get(client, "a")["status"] == "waiting"
    assert counts(client) == (1, 0, 0)


def test_wait_over_max_poll_wait_is_invalid(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_poll_wait=2)
    body = assert_problem(client.post(f"{Q}/poll", json={"wait": 2.5}), 422, "invalid")
    assert "2" in body["detail"]
    assert poll(client, wait=0) == []


# -- heartbeat, finish, retry, release, force-finish ----------------------------------------


def test_heartbeat_extends_the_lease(client: TestClient) -> None:
    lease = acquire(client, "a", alive_time=10)
    before = unix(get(client, "a")["lease_expires_at"])
    assert (
        client.post(f"{Q}/heartbeat", json={"id": "a", "lease": lease, "alive_time": 600}).status_code == 204
    )
    task = get(client, "a")
    assert unix(task["lease_expires_at"]) >= before + 590
    assert task["status"] == "running"


def test_heartbeat_with_data_replaces_the_data(client: TestClient) -> None:
    submit(client, "a", "kind", data={"old": 1, "keep": "no"}, compression="gzip")
    (task,) = poll(client)
    response = client.post(f"{Q}/heartbeat", json={"id": "a", "lease": task["lease"], "data": {"new": [2]}})
    assert response.status_code == 204
    task = get(client, "a")
    assert (task["type"], task["data"], task["compression"]) == ("kind", {"new": [2]}, "gzip")


@pytest.mark.parametrize("data", [b'{"x": NaN}', b'{"x": -Infinity}', b'{"x": "\\udc00"}', b'{"type": "t2"}'])
def test_heartbeat_with_unstorable_data_changes_nothing(client: TestClient, data: bytes) -> None:
    submit(client, "a", data={"keep": 1})
    (task,) = poll(client, alive_time=100)
    body = b'{"id": "a", "lease": "%s", "alive_time": 900, "data": %s}' % (task["lease"].encode(), data)
    assert_problem(client.post(f"{Q}/heartbeat", content=body, headers=JSON), 422, "invalid")
    after = get(client, "a")
    assert (after["type"], after["data"]) == ("t", {"keep": 1})
    assert after["lease_expires_at"] == task["lease_expires_at"]


def test_an_ended_task_tells_when_it_ended_and_when_its_row_goes(
    make_client: Callable[..., TestClient],
) -> None:
    """Real instants, never the finished rows' encoded timeout (decades in the past)."""
    client = make_client(retention_time=600, dead_retention_time=7200, max_attempts=1)
    lease = acquire(client, "mail-1", alive_time=60)
    assert client.post(f"{Q}/finish", json={"id": "mail-1", "lease": lease}).status_code == 204
    lease = acquire(client, "mail-2")
    assert client.post(f"{Q}/retry", json={"id": "mail-2", "lease": lease}).status_code == 204
    now = int(time.time())
    for task_id, status, kept in [("mail-1", "finished", 600), ("mail-2", "dead", 7200)]:
        task = get(client, task_id)
        assert (task["status"], task["created_at"], task["due_at"], task["lease_expires_at"]) == (
            status,
            None,
            None,
            None,
        )
        assert now - 5 <= unix(task["finished_at"]) <= now + 1
        assert now + kept - 5 <= unix(task["expires_at"]) <= now + kept + 1


def test_finish_then_finish_again_is_already_finished(client: TestClient) -> None:
    lease = acquire(client, "a")
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": lease}).status_code == 204
    assert get(client, "a")["status"] == "finished"
    assert_problem(client.post(f"{Q}/finish", json={"id": "a", "lease": lease}), 409, "already_finished")
    assert counts(client) == (0, 0, 1)


def test_finish_unknown_task_is_not_found(client: TestClient) -> None:
    assert_problem(client.post(f"{Q}/finish", json={"id": "nope", "lease": "1"}), 404, "not_found")
    assert everything(client) == []


def test_operations_of_an_expired_lease_are_preempted(client: TestClient) -> None:
    old = acquire(client, "a", alive_time=60)
    expire_lease(store_of(client), "a")
    (task,) = poll(client)
    new = task["lease"]
    assert new != old
    stale = {"id": "a", "lease": old}
    for path, extra in [("heartbeat", {}), ("heartbeat", {"data": {"x": 1}}), ("finish", {})]:
        assert_problem(client.post(f"{Q}/{path}", json={**stale, **extra}), 409, "preempted")
    for path, extra in [("retry", {"retry_wait": 0}), ("release", {})]:
        assert_problem(client.post(f"{Q}/{path}", json={**stale, **extra}), 409, "preempted")
    response = client.post(f"{Q}/finish-batch", json={"tasks": [stale]})
    assert [f["code"] for f in response.json()["failed"]] == ["preempted"]
    after = get(client, "a")
    assert (after["status"], after["data"]) == ("running", {})
    assert after["lease_expires_at"] == task["lease_expires_at"]
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": new}).status_code == 204


@pytest.mark.parametrize("path", ["heartbeat", "retry", "release"])
def test_lease_operations_on_a_finished_or_missing_task_are_preempted(client: TestClient, path: str) -> None:
    lease = acquire(client, "a")
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": lease}).status_code == 204
    assert_problem(client.post(f"{Q}/{path}", json={"id": "a", "lease": lease}), 409, "preempted")
    assert_problem(client.post(f"{Q}/{path}", json={"id": "nope", "lease": lease}), 409, "preempted")
    assert get(client, "a")["status"] == "finished"
    assert poll(client) == []


def test_retry_with_zero_wait_is_delivered_again(client: TestClient) -> None:
    lease = acquire(client, "a")
    assert client.post(f"{Q}/retry", json={"id": "a", "lease": lease, "retry_wait": 0}).status_code == 204
    (task,) = poll(client)
    assert task["id"] == "a"
    assert task["lease"] != lease
    assert_problem(client.post(f"{Q}/finish", json={"id": "a", "lease": lease}), 409, "preempted")


def test_retry_with_dead_gives_up_at_once(client: TestClient) -> None:
    lease = acquire(client, "a")
    body = {"id": "a", "lease": lease, "error": "UnknownType: no route", "dead": True}
    assert client.post(f"{Q}/retry", json=body).status_code == 204
    task = get(client, "a")
    assert (task["status"], task["attempts"], task["last_error"]) == ("dead", 1, "UnknownType: no route")
    assert poll(client) == []


def test_retry_defaults_to_the_settings_retry_wait(make_client: Callable[..., TestClient]) -> None:
    client = make_client(retry_wait=777, retry_backoff="constant")
    lease = acquire(client, "a")
    assert client.post(f"{Q}/retry", json={"id": "a", "lease": lease}).status_code == 204
    now = int(time.time())
    assert now + 777 - 5 <= unix(get(client, "a")["due_at"]) <= now + 777 + 5
    assert poll(client) == []


def test_release_is_delivered_again_at_once(client: TestClient) -> None:
    lease = acquire(client, "a")
    assert client.post(f"{Q}/release", json={"id": "a", "lease": lease}).status_code == 204
    assert get(client, "a")["status"] == "waiting"
    (task,) = poll(client)
    assert task["id"] == "a"


def test_force_finish(client: TestClient) -> None:
    lease = acquire(client, "running")
    submit(client, "waiting")
    for task_id in ("running", "waiting"):
        assert client.post(f"{Q}/force-finish", json={"id": task_id}).status_code == 204
        assert get(client, task_id)["status"] == "finished"
    assert_problem(client.post(f"{Q}/force-finish", json={"id": "running"}), 409, "already_finished")
    assert_problem(client.post(f"{Q}/force-finish", json={"id": "nope"}), 404, "not_found")
    assert_problem(
        client.post(f"{Q}/finish", json={"id": "running", "lease": lease}), 409, "already_finished"
    )
    assert poll(client) == []
    assert counts(client) == (0, 0, 2)


BAD_LEASES: list[Any] = ["abc", "", "0", "01", "-1", "1.0", " 1", "1e3", 12, None, "9" * 20, str(2**63)]
LEASE_CALLS = [
    ("heartbeat", {}),
    ("heartbeat", {"alive_time": -1}),
    ("heartbeat", {"alive_time": 0}),
    ("heartbeat", {"data": {"type": "x"}}),
    ("heartbeat", {"data": [1]}),
    ("heartbeat", {"extra": 1}),
    ("finish", {}),
    ("finish", {"extra": 1}),
    ("retry", {}),
    ("retry", {"retry_wait": -1}),
    ("retry", {"retry_wait": "soon"}),
    ("release", {}),
    ("release", {"retry_wait": 0}),
    ("force-finish", {"lease": "1"}),
]


@pytest.mark.parametrize(("path", "extra"), LEASE_CALLS)
def test_invalid_lease_operations_change_nothing(
    client: TestClient, path: str, extra: dict[str, Any]
) -> None:
    lease = acquire(client, "a", alive_time=100)
    submit(client, "b")
    before = everything(client)
    leases = [lease] if extra else BAD_LEASES
    for bad in leases:
        body = {"id": "a", **({"lease": bad} if path != "force-finish" else {}), **extra}
        assert_problem(client.post(f"{Q}/{path}", json=body), 422, "invalid")
    for body in ({"lease": lease}, {"id": "a", "lease": lease, "id2": 1}, {"id": "x" * 256, "lease": lease}):
        assert_problem(client.post(f"{Q}/{path}", json=body), 422, "invalid")
    assert_problem(client.post(f"{Q}/{path}", content=b'{"id": "a",', headers=JSON), 400, "bad_request")
    assert everything(client) == before
    assert client.post(f"{Q}/finish", json={"id": "a", "lease": lease}).status_code == 204


# -- finish-batch ----------------------------------------------------------------------------


def test_finish_batch_reports_each_item(client: TestClient) -> None:
    for task_id in ("a", "b", "c", "done"):
        submit(client, task_id)
    tasks = poll(client, 4)
    lease = tasks[0]["lease"]
    assert client.post(f"{Q}/finish", json={"id": "done", "lease": lease}).status_code == 204
    items = [
        {"id": "a", "lease": lease},
        {"id": "b", "lease": str(int(lease) % (2**62) + 1)},
        {"id": "nope", "lease": lease},
        {"id": "done", "lease": lease},
        {"id": "c", "lease": lease},
        {"id": "a", "lease": lease},
    ]
    response = client.post(f"{Q}/finish-batch", json={"tasks": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["successful"] == [{"id": "a"}, {"id": "c"}]
    assert [(f["id"], f["code"]) for f in body["failed"]] == [
        ("b", "preempted"),
        ("nope", "not_found"),
        ("done", "already_finished"),
        ("a", "already_finished"),
    ]
    assert {t["id"]: t["status"] for t in everything(client)} == {
        "a": "finished",
        "b": "running",
        "c": "finished",
        "done": "finished",
    }


def test_finish_batch_of_1000(client: TestClient) -> None:
    tasks = [{"id": f"b{i:04d}", "type": "t"} for i in range(1000)]
    assert client.post(f"{Q}/submit-batch", json={"tasks": tasks}).status_code == 200
    leased = poll(client, 100)
    items = [{"id": t["id"], "lease": t["lease"]} for t in leased]
    items += [{"id": f"b{i:04d}", "lease": leased[0]["lease"]} for i in range(100, 1000)]
    body = client.post(f"{Q}/finish-batch", json={"tasks": items}).json()
    assert len(body["successful"]) == 100
    assert {f["code"] for f in body["failed"]} == {"preempted"}
    assert len(body["failed"]) == 900
    assert counts(client) == (900, 0, 100)


@pytest.mark.parametrize(
    "make_items",
    [
        lambda lease: [{"id": "a", "lease": lease}] * 1001,
        lambda lease: [],
        lambda lease: [{"id": "a", "lease": lease}, {"id": "b", "lease": "x"}],
        lambda lease: [{"id": "a", "lease": lease}, {"id": "b", "lease": "9" * 19}],
        lambda lease: [{"id": "a", "lease": lease}, {"id": "b"}],
    ],
    ids=["1001 items", "no items", "a lease not digits", "a lease out of range", "a lease missing"],
)
def test_invalid_finish_batch_finishes_nothing(
    client: TestClient, make_items: Callable[[str], list[dict[str, Any]]]
) -> None:
    lease = acquire(client, "a")
    response = client.post(f"{Q}/finish-batch", json={"tasks": make_items(lease)})
    assert_problem(response, 422, "invalid")
    assert get(client, "a")["status"] == "running"
    assert counts(client) == (0, 1, 0)


# -- list ------------------------------------------------------------------------------------


def fill_for_listing(client: TestClient) -> None:
    for i in range(10):
        submit(client, f"t{i:02d}", "even" if i % 2 == 0 else "odd", user="u1" if i < 4 else None)
    leased = poll(client, 3)  # t00 t01 t02 (submitted first, same second: ordered by timeout)
    assert len(leased) == 3
    finished = leased[0]
    assert (
        client.post(f"{Q}/finish", json={"id": finished["id"], "lease": finished["lease"]}).status_code == 204
    )


def listed(client: TestClient, **params: Any) -> list[str]:
    body = client.get(f"{Q}/tasks", params={"limit": 1000, **params}).json()
    return [t["id"] for t in body["tasks"]]


def test_list_filters_by_status_type_and_user(client: TestClient) -> None:
    fill_for_listing(client)
    everything_ = listed(client)
    assert everything_ == [f"t{i:02d}" for i in range(10)]
    by_status = {s: listed(client, status=s) for s in ("waiting", "running", "finished")}
    assert sorted(i for ids in by_status.values() for i in ids) == everything_
    assert len(by_status["finished"]) == 1 and len(by_status["running"]) == 2
    assert len(by_status["waiting"]) == 7
    assert listed(client, type="even") == [f"t{i:02d}" for i in range(0, 10, 2)]
    assert listed(client, user="u1") == [
        i for i in ["t00", "t01", "t02", "t03"] if i not in by_status["finished"]
    ]
    assert listed(client, type="odd", status="waiting") == [i for i in by_status["waiting"] if int(i[1:]) % 2]
    assert listed(client, type="none") == []
    assert listed(client, user="nobody") == []


def test_list_pagination_visits_every_task_once(client: TestClient) -> None:
    ids = [f"p{i:02d}" for i in range(23)] + SPECIAL_IDS
    response = client.post(f"{Q}/submit-batch", json={"tasks": [{"id": i, "type": "t"} for i in ids]})
    assert response.json()["failed"] == []
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor is not None else {})}
        body = client.get(f"{Q}/tasks", params=params).json()
        assert len(body["tasks"]) <= 4
        seen += [t["id"] for t in body["tasks"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 100
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    assert pages >= len(ids) // 4


def test_list_pagination_with_a_type_filter(client: TestClient) -> None:
    tasks = [{"id": f"f{i:03d}", "type": "wanted" if i % 7 == 0 else "other"} for i in range(100)]
    assert client.post(f"{Q}/submit-batch", json={"tasks": tasks}).json()["failed"] == []
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": 2, "type": "wanted", **({"cursor": cursor} if cursor else {})}
        body = client.get(f"{Q}/tasks", params=params).json()
        seen += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"f{i:03d}" for i in range(0, 100, 7)]


@pytest.mark.parametrize(
    "params",
    [{"status": "done"}, {"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"type": "x" * 256}],
)
def test_invalid_list_parameters(client: TestClient, params: dict[str, Any]) -> None:
    submit(client, "a")
    assert_problem(client.get(f"{Q}/tasks", params=params), 422, "invalid")
    assert counts(client) == (1, 0, 0)


def test_every_field_of_a_submit_reaches_the_store() -> None:
    """The submit body is copied into the store's NewTask field by field: a field added to one
    and not the other fails here, not silently in production."""
    from dataclasses import fields

    from perfectqueue.service import models
    from perfectqueue.service.operations import new_task
    from perfectqueue.service.store import NewTask

    assert set(models.SubmitRequest.model_fields) == {f.name for f in fields(NewTask)}
    body = models.SubmitRequest(
        id="i",
        type="t",
        data={"k": 1},
        user="u",
        max_running=2,
        run_at=2_000_000_000,
        compression="gzip",
        max_attempts=3,
        traceparent=None,
    )
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = new_task(body, trace)
    assert task == NewTask("i", "t", {"k": 1}, "u", 2, 2_000_000_000, "gzip", 3, trace)
