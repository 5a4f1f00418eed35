"""Limits and bad input: each violation is a 4xx problem, nothing is stored, never a 500.

In process against the real app on each backend (and one real server for a chunked body).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import drop_table
from servers import running_service, write_config

from perfectqueue.errors import ConfigError
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2 with a warning at import
    from fastapi.testclient import TestClient

Q = "/v1/queues/q"
JSON = {"content-type": "application/json"}
LIMITS = {"max_body_bytes": 8192, "max_data_bytes": 2048}


@pytest.fixture
def client(db_url: str, table_name: str) -> Iterator[TestClient]:
    values = {"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True, **LIMITS}
    with TestClient(create_app(settings_from(values)), raise_server_exceptions=False) as client:
        yield client
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()


def everything(client: TestClient) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = client.get(f"{Q}/tasks", params={"limit": 1000}).json()["tasks"]
    return tasks


def prepared(client: TestClient) -> tuple[str, list[dict[str, Any]]]:
    """A running task 'a' (its lease returned) and a waiting task 'b'; the queue's state."""
    assert client.post(f"{Q}/submit", json={"id": "a", "type": "t", "data": {"v": 1}}).status_code == 201
    (task,) = client.post(f"{Q}/poll", json={"max": 1, "alive_time": 300}).json()["tasks"]
    assert client.post(f"{Q}/submit", json={"id": "b", "type": "t"}).status_code == 201
    return task["lease"], everything(client)


def assert_rejected(response: httpx.Response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert status is None or response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] and response.json()["detail"]


# -- body and data size ----------------------------------------------------------------------


def test_body_over_the_limit_with_content_length(client: TestClient) -> None:
    _, before = prepared(client)
    body = b'{"id": "big", "type": "t", "data": {"x": "' + b"y" * 9000 + b'"}}'
    response = client.post(f"{Q}/submit", content=body, headers=JSON)
    assert response.request.headers["content-length"] == str(len(body))
    assert_rejected(response, 413)
    assert response.json()["code"] == "too_large"
    assert everything(client) == before


def test_chunked_body_over_the_limit_without_content_length(client: TestClient) -> None:
    _, before = prepared(client)

    def chunks() -> Iterator[bytes]:
        yield b'{"id": "big", "type": "t", "data": {"x": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    response = client.post(f"{Q}/submit", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_rejected(response, 413)
    assert everything(client) == before


def test_chunked_body_through_a_real_server(db_url: str, table_name: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "pq.yml", db_url, table_name, **LIMITS)

    def chunks(count: int) -> Iterator[bytes]:
        yield b'{"id": "c", "type": "t", "data": {"x": "'
        for _ in range(count):
            yield b"y" * 500
        yield b'"}}'

    try:
        with running_service(config) as base:
            response = httpx.post(f"{base}{Q}/submit", content=chunks(20), headers=JSON, timeout=10)
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert_rejected(response, 413)
            assert httpx.get(f"{base}{Q}/tasks", timeout=10).json()["tasks"] == []
            response = httpx.post(f"{base}{Q}/submit", content=chunks(2), headers=JSON, timeout=10)
            assert response.status_code == 201, response.text
    finally:
        if not db_url.startswith("sqlite"):
            db = Database(db_url)
            drop_table(db, table_name)
            db.dispose()


def test_data_over_the_limit(client: TestClient) -> None:
    lease, before = prepared(client)
    big = {"x": "y" * 2100}
    assert_rejected(client.post(f"{Q}/submit", json={"id": "c", "type": "t", "data": big}), 413)
    # the first task is refused on its own ('type' is reserved in data): the big one is still named
    refused = {"id": "c", "type": "t", "data": {"type": "x"}}
    batch = {"tasks": [refused, {"id": "d", "type": "t", "data": big}]}
    response = client.post(f"{Q}/submit-batch", json=batch)
    assert_rejected(response, 413)
    assert "task 'd'" in response.json()["detail"]
    assert_rejected(client.post(f"{Q}/heartbeat", json={"id": "a", "lease": lease, "data": big}), 413)
    assert everything(client) == before
    just = {"x": "y" * 2000}
    assert client.post(f"{Q}/submit", json={"id": "c", "type": "t", "data": just}).status_code == 201


def test_limits_are_validated_at_start() -> None:
    with pytest.raises(ConfigError, match="max_data_bytes"):
        settings_from({"max_body_bytes": 4096, "max_data_bytes": 8192})
    with pytest.raises(ConfigError, match="max_body_bytes"):
        settings_from({"max_body_bytes": -1})


# -- bad input -------------------------------------------------------------------------------

NESTED = b'{"id": "n", "type": "t", "data": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
DEEP: list[Any] = []
for _ in range(64):
    DEEP = [DEEP]
BAD: list[tuple[str, str, Any]] = [
    ("invalid JSON", "submit", b'{"id": "x", "type": '),
    ("not UTF-8", "submit", b'\xff\xfe{"id": "x"}'),
    ("a JSON string", "poll", b'"max"'),
    ("nesting too deep to parse", "submit", NESTED),
    ("a 5000-digit number", "submit", b'{"id": "x", "type": "t", "data": {"n": ' + b"9" * 5000 + b"}}"),
    ("id is an object", "submit", {"id": {"a": 1}, "type": "t"}),
    ("type is a bool", "submit", {"id": "x", "type": True}),
    ("max is a list", "poll", {"max": [1]}),
    ("max negative", "poll", {"max": -5}),
    ("max absurd", "poll", {"max": 10**30}),
    ("wait absurd", "poll", {"wait": 10**9}),
    ("wait over max_poll_wait", "poll", {"wait": 21}),
    ("alive_time negative", "poll", {"alive_time": -300}),
    ("alive_time absurd", "poll", {"alive_time": 10**30}),
    ("alive_time 1e400", "poll", b'{"alive_time": 1e400}'),
    ("heartbeat alive_time absurd", "heartbeat", {"id": "a", "lease": "LEASE", "alive_time": 2**63}),
    ("retry_wait negative", "retry", {"id": "a", "lease": "LEASE", "retry_wait": -1}),
    ("retry_wait absurd", "retry", {"id": "a", "lease": "LEASE", "retry_wait": 10**30}),
    ("retry_wait beyond INT", "retry", {"id": "a", "lease": "LEASE", "retry_wait": 2**31}),
    ("run_at past 2038", "submit", {"id": "x", "type": "t", "run_at": 2**31}),
    ("run_at beyond BIGINT", "submit", {"id": "x", "type": "t", "run_at": 2**64}),
    ("run_at negative", "submit", {"id": "x", "type": "t", "run_at": -1}),
    ("max_running absurd", "submit", {"id": "x", "type": "t", "max_running": 10**30}),
    ("NUL in id", "submit", {"id": "x\x00", "type": "t"}),
    ("escape in id", "submit", {"id": "x\x1b[31m", "type": "t"}),
    ("newline in user", "submit", {"id": "x", "type": "t", "user": "u\n"}),
    ("data nested 65 deep", "submit", {"id": "x", "type": "t", "data": {"x": DEEP}}),
    ("control in finish id", "finish", {"id": "a\x00", "lease": "LEASE"}),
    ("control in force-finish id", "force-finish", {"id": "a\x00"}),
    ("id over 255 bytes", "submit", {"id": "é" * 128, "type": "t"}),
    ("type over 255 bytes", "submit", {"id": "x", "type": "t" * 256}),
    ("user over 255 bytes", "submit", {"id": "x", "type": "t", "user": "u" * 256}),
    ("batch over 1000", "submit-batch", {"tasks": [{"id": f"x{i}", "type": "t"} for i in range(1001)]}),
    ("lease beyond BIGINT", "finish", {"id": "a", "lease": "9" * 25}),
]


@pytest.mark.parametrize(("path", "body"), [(p, b) for _, p, b in BAD], ids=[name for name, _, _ in BAD])
def test_bad_input_is_a_4xx_and_changes_nothing(client: TestClient, path: str, body: Any) -> None:
    lease, before = prepared(client)
    if isinstance(body, bytes):
        response = client.post(f"{Q}/{path}", content=body, headers=JSON)
    else:
        text = httpx.Request("POST", "/", json=body).content.replace(b"LEASE", lease.encode())
        response = client.post(f"{Q}/{path}", content=text, headers=JSON)
    assert_rejected(response)
    assert everything(client) == before


INJECTIONS = ["q'; DROP TABLE q; --", 'q" OR "1"="1', "q`; DELETE FROM q", "q%00", "%27%3B--"]


@pytest.mark.parametrize("name", INJECTIONS)
def test_queue_names_that_try_sql_injection(client: TestClient, table_name: str, name: str) -> None:
    _, before = prepared(client)
    for method, suffix, body in [
        ("GET", "", None),
        ("POST", "/submit", {"id": "x", "type": "t"}),
        ("POST", "/force-finish", {"id": "a"}),
        ("GET", "/tasks", None),
    ]:
        response = client.request(method, f"/v1/queues/{name}{suffix}", json=body)
        assert_rejected(response)
    assert everything(client) == before
    db = client.app.state.runtime.queues["q"].store.db
    with db.engine.connect() as conn:
        assert sa.inspect(conn).has_table(table_name)


def test_injection_in_ids_and_filters_is_only_data(client: TestClient) -> None:
    _, before = prepared(client)
    sneaky = "x'); DELETE FROM t; --"
    assert client.post(f"{Q}/submit", json={"id": sneaky, "type": "t' OR '1'='1"}).status_code == 201
    assert len(everything(client)) == len(before) + 1
    page = client.get(f"{Q}/tasks", params={"type": "t' OR '1'='1", "cursor": "' OR 1=1 --"}).json()
    assert [t["id"] for t in page["tasks"]] == [sneaky]


def test_a_bad_item_of_a_batch_fails_alone(client: TestClient) -> None:
    _, before = prepared(client)
    batch = {"tasks": [{"id": "ok", "type": "t"}, {"id": "x\x07", "type": "t"}]}
    body = client.post(f"{Q}/submit-batch", json=batch).json()
    assert body["successful"] == [{"id": "ok"}]
    assert [(f["id"], f["code"]) for f in body["failed"]] == [("x\x07", "invalid")]
    assert [t["id"] for t in everything(client)] == [t["id"] for t in before] + ["ok"]


def test_nested_data_is_stored_or_refused_never_a_500(client: TestClient) -> None:
    for depth in (10, 63, 64, 65, 200, 900):
        body = b'{"id": "n%d", "type": "t", "data": {"x": ' % depth + b"[" * depth + b"]" * depth + b"}}"
        response = client.post(f"{Q}/submit", content=body, headers=JSON)
        assert response.status_code == (201 if depth + 1 <= 64 else 422), response.text
        stored = [t["id"] for t in everything(client)]
        assert (f"n{depth}" in stored) == (response.status_code == 201)


# -- found by tests/test_schemathesis.py -------------------------------------------------------


@pytest.mark.parametrize("field", ["max", "alive_time", "wait"])
@pytest.mark.parametrize("value", ["5", True])
def test_a_number_given_as_a_string_or_a_boolean_is_refused(
    client: TestClient, field: str, value: Any
) -> None:
    client.post("/v1/queues/q/submit", json={"id": "a", "type": "t"})
    response = client.post("/v1/queues/q/poll", json={field: value})
    assert response.status_code == 422, response.text
    assert everything(client)[0]["status"] == "waiting"


def test_an_unsupported_method_is_a_405_that_says_what_is_allowed(client: TestClient) -> None:
    response = client.request("TRACE", "/v1/queues/q/submit")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.headers["Content-Type"].startswith("application/problem+json")


def test_a_body_that_is_not_json_is_a_documented_400(client: TestClient) -> None:
    response = client.post(
        "/v1/queues/q/submit", content=b"\xff{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    document = client.get("/openapi.json").json()
    assert "400" in document["paths"]["/v1/queues/{queue}/submit"]["post"]["responses"]
