"""The hot operations' short path (service/fastlane.py): it answers plainly fine requests without
FastAPI, gives every other request to FastAPI, and answers exactly as FastAPI would.

In process against the real app on each backend, with API keys configured.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import drop_table, fast_lane
from starlette.types import Receive, Scope, Send

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.operations import OPERATIONS
from perfectqueue.service.security import hash_key, new_key
from perfectqueue.service.store import Database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2 with a warning at import
    from fastapi.testclient import TestClient

PRODUCER, WORKER = new_key(), new_key()
KEYS = [
    {"name": "producer", "hash": hash_key(PRODUCER), "scopes": ["submit"]},
    {"name": "worker", "hash": hash_key(WORKER), "scopes": ["work"]},
]
Q = "/v1/queues/q"


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def make_client(db_url: str, table_name: str) -> Iterator[Callable[[str], TestClient]]:
    """A client of a fresh app serving queue ``q`` on table ``table_name`` + suffix, with keys."""
    opened: list[tuple[TestClient, str]] = []

    def make(suffix: str) -> TestClient:
        table = f"{table_name}{suffix}"
        settings = {"url": db_url, "queues": {"q": {"table": table}}, "auto_init": True, "api_keys": KEYS}
        client = TestClient(create_app(settings_from(settings))).__enter__()
        opened.append((client, table))
        return client

    yield make
    for client, table in opened:
        client.__exit__(None, None, None)
        if not db_url.startswith("sqlite"):
            db = Database(db_url)
            drop_table(db, table)
            db.dispose()


class Behind:
    """Stands for FastAPI behind the short path: counts what reaches it, answers 599."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_every_hot_operation_is_served_here_and_by_its_route(
    make_client: Callable[[str], TestClient],
) -> None:
    client = make_client("")
    hot = {op.id: op.path for op in OPERATIONS if op.hot}
    assert len(hot) == 8
    assert {op.id for op, _, _ in fast_lane(client).hot.values()} == set(hot)
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    assert {op_id: paths[path]["post"]["operationId"] for op_id, path in hot.items()} == {h: h for h in hot}


def test_plainly_fine_requests_never_reach_fastapi(make_client: Callable[[str], TestClient]) -> None:
    client = make_client("")
    behind = fast_lane(client).app = Behind()  # type: ignore[method-assign]
    work, submit = bearer(WORKER), bearer(PRODUCER)
    assert client.post(f"{Q}/submit", json={"id": "a", "type": "t"}, headers=submit).status_code == 201
    traced = {**submit, "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert client.post(f"{Q}/submit", json={"id": "b", "type": "t"}, headers=traced).status_code == 201
    tasks = client.post(f"{Q}/poll", json={"max": 2}, headers=work).json()["tasks"]
    assert sorted(t["id"] for t in tasks) == ["a", "b"]
    a, b = sorted(tasks, key=lambda t: t["id"])
    lease_a, lease_b = {"id": "a", "lease": a["lease"]}, {"id": "b", "lease": b["lease"]}
    assert client.post(f"{Q}/heartbeat", json=lease_a, headers=work).status_code == 204
    assert client.post(f"{Q}/finish", json=lease_a, headers=work).status_code == 204
    batch = {"tasks": [lease_b], "alive_time": 60}
    assert client.post(f"{Q}/heartbeat-batch", json=batch, headers=work).json()["successful"]
    assert client.post(f"{Q}/release", json=lease_b, headers=work).status_code == 204
    (b,) = client.post(f"{Q}/poll", json={"max": 1}, headers=work).json()["tasks"]
    lease_b = {"id": "b", "lease": b["lease"]}
    assert client.post(f"{Q}/retry", json={**lease_b, "retry_wait": 0}, headers=work).status_code == 204
    (b,) = client.post(f"{Q}/poll", json={"max": 1}, headers=work).json()["tasks"]
    lease_b = {"id": "b", "lease": b["lease"]}
    assert client.post(f"{Q}/finish-batch", json={"tasks": [lease_b]}, headers=work).json()["successful"]
    # a domain error is answered here too, as the problem FastAPI's handler gives
    again = client.post(f"{Q}/finish", json=lease_a, headers=work)
    assert again.status_code == 409 and again.json()["code"] == "already_finished"
    # and a header the operation refuses, by the same rule as FastAPI's route
    bad = client.post(
        f"{Q}/submit", json={"id": "x", "type": "t"}, headers={**submit, "traceparent": "0" * 56}
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid"
    assert behind.paths == []

    refused = [
        ("POST", f"{Q}/submit", {"id": "x"}, submit, b""),  # the body's model refuses it
        ("POST", f"{Q}/submit", None, submit, b'{"id": '),  # not JSON
        ("POST", f"{Q}/submit", None, {**submit, "content-type": "text/plain"}, b'{"id":"x","type":"t"}'),
        ("POST", f"{Q}/submit", {"id": "x", "type": "t"}, work, b""),  # the key lacks the scope
        ("POST", "/v1/queues/elsewhere/poll", {"max": 1}, work, b""),  # no such queue
        ("POST", f"{Q}/submit-batch", {"tasks": []}, submit, b""),  # not a hot operation
        ("PUT", f"{Q}/poll", {"max": 1}, work, b""),
    ]
    for method, path, body, headers, raw in refused:
        response = client.request(method, path, json=body, content=raw or None, headers=headers)
        assert response.status_code == 599, (method, path)
    assert len(behind.paths) == len(refused)


VOLATILE = re.compile(rb'"(lease|[a-z_]+_at)":("?)[0-9TZ:-]+("?)')


def conversation(client: TestClient) -> list[tuple[int, str | None, bytes]]:
    """The same requests, fine and not, answered: (status, content type, body without the values
    that differ from run to run)."""
    work, submit = bearer(WORKER), bearer(PRODUCER)
    answers = []

    def post(op: str, body: Any, headers: dict[str, str], queue: str = "q") -> Any:
        response = client.post(f"/v1/queues/{queue}/{op}", json=body, headers=headers)
        answers.append((response.status_code, response.headers.get("content-type"), response.content))
        return response

    first = {"id": "a", "type": "t", "data": {"n": 1, "s": "ü"}, "user": "u", "max_running": 2}
    post("submit", first, submit)
    post("submit", {"id": "a", "type": "t"}, submit)  # 409
    post("submit", {"id": "b", "type": "t"}, {**submit, "traceparent": "not a traceparent"})  # 422
    post("submit", {"id": "b", "type": "t"}, {**submit, "traceparent": "0" * 56})  # 422
    post("submit", {"id": "c", "type": "t", "max_attempts": 3, "compression": "gzip"}, submit)
    post("submit", {"id": "d", "type": "t"}, submit)
    post("submit", {"id": "x", "type": "t", "unknown_field": 1}, submit)  # 422
    post("submit", {"id": "e", "type": "t"}, work)  # 403
    post("submit", {"id": "f", "type": "t"}, submit, queue="elsewhere")  # 404
    polled = post("poll", {"max": 10, "alive_time": 60}, work).json()["tasks"]
    leases = {t["id"]: {"id": t["id"], "lease": t["lease"]} for t in polled}
    post("poll", {"max": 0}, work)  # 422
    post("poll", {"max": 1, "wait": 10**9}, work)  # 422
    post("heartbeat", {**leases["a"], "data": {"progress": 1}}, work)
    post("heartbeat", {"id": "a", "lease": "1"}, work)  # 409
    post("heartbeat", {"id": "zz", "lease": "1"}, work)  # 404
    post("finish", leases["a"], work)
    post("finish", leases["a"], work)  # 409
    post("finish", {"id": "a", "lease": "x"}, work)  # 422
    post("finish-batch", {"tasks": [leases["c"], leases["a"], {"id": "zz", "lease": "1"}]}, work)
    post("finish-batch", {"tasks": []}, work)
    post("heartbeat-batch", {"tasks": [leases["d"], {"id": "a", "lease": "1"}], "alive_time": 60}, work)
    post("retry", {**leases["d"], "retry_wait": 0, "error": "boom"}, work)
    post("retry", leases["d"], work)  # 409
    post("retry", {**leases["d"], "retry_wait": -1}, work)  # 422
    again = post("poll", {"max": 1}, work).json()["tasks"]
    post("release", {"id": "d", "lease": again[0]["lease"]}, work)
    post("release", {"id": "d", "lease": again[0]["lease"]}, work)  # 409
    post("release", {"id": "d"}, work)  # 422
    return [(status, kind, VOLATILE.sub(rb'"\1":\g<2>0\g<3>', body)) for status, kind, body in answers]


def test_answers_are_fastapis(make_client: Callable[[str], TestClient]) -> None:
    fast, slow = make_client("_fast"), make_client("_slow")
    fast_lane(slow).hot = {}  # every request to FastAPI
    answers = conversation(fast)
    assert answers == conversation(slow)
    assert len({status for status, _, _ in answers}) >= 6  # 200, 201, 204, 404, 409, 422 (and 403)
