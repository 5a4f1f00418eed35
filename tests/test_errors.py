"""One rule per kind of mistake, the same on every endpoint and on both paths to an operation
(the short path and FastAPI); and the documented list of error codes is the one the code emits.

In process against the real app on each backend.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import drop_table, fast_lane

from perfectqueue.client._http import raise_for
from perfectqueue.errors import (
    ERRORS_BY_CODE,
    ConfigError,
    PerfectQueueError,
    RequestError,
    TaskError,
    UnsupportedMediaTypeError,
)
from perfectqueue.service import problems
from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.operations import OPERATIONS
from perfectqueue.service.store import Database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2 with a warning at import
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
Q = "/v1/queues/q"
TEXT = '{"id": "a", "type": "t"}'


@pytest.fixture
def clients(db_url: str, table_name: str) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps on one queue: one with its short path, one whose every request goes to FastAPI."""
    values = {"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True}
    with (
        TestClient(create_app(settings_from(values))) as fast,
        TestClient(create_app(settings_from(values))) as slow,
    ):
        fast_lane(slow).hot = {}
        yield fast, slow
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()


def both(
    clients: tuple[TestClient, TestClient], request: Callable[[TestClient], httpx.Response]
) -> httpx.Response:
    """The answer, which must be the same byte for byte on both paths."""
    fast, slow = (request(client) for client in clients)
    assert (fast.status_code, fast.headers.get("content-type"), fast.content) == (
        slow.status_code,
        slow.headers.get("content-type"),
        slow.content,
    )
    return fast


def everything(client: TestClient) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = client.get(f"{Q}/tasks", params={"limit": 1000}).json()["tasks"]
    return tasks


JSON = "application/json"
BAD_BODIES = [
    # (name, content type, body, status, code)
    ("malformed JSON", JSON, b'{"id": "a",', 400, "bad_request"),
    ("malformed JSON, +json", "application/x+json", b"{", 400, "bad_request"),
    ("malformed JSON, no content type", None, b"{'id': 1}", 400, "bad_request"),
    ("not UTF-8", JSON, b'{"id": "\xff"}', 400, "bad_request"),
    ("Latin-1, no content type", None, '{"id": "é"}'.encode("latin-1"), 400, "bad_request"),
    ("UTF-16 with BOM", JSON, TEXT.encode("utf-16"), 400, "bad_request"),
    ("UTF-16-LE without BOM", JSON, TEXT.encode("utf-16-le"), 400, "bad_request"),
    (
        "UTF-16-BE without BOM",
        "application/json; charset=utf-16",
        TEXT.encode("utf-16-be"),
        400,
        "bad_request",
    ),
    ("UTF-32", None, TEXT.encode("utf-32"), 400, "bad_request"),
    ("text/plain", "text/plain", TEXT.encode(), 415, "unsupported_media_type"),
    ("a form", "application/x-www-form-urlencoded", b"id=a&type=t", 415, "unsupported_media_type"),
    ("xml", "application/xml", b"<task id='a'/>", 415, "unsupported_media_type"),
    ("multipart", "multipart/form-data; boundary=x", b"--x--", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("segment", [op.segment for op in OPERATIONS])
def test_a_body_that_cannot_be_read_is_refused_alike_everywhere(
    clients: tuple[TestClient, TestClient], segment: str
) -> None:
    fast, _ = clients
    assert fast.post(f"{Q}/submit", json={"id": "keep", "type": "t"}).status_code == 201
    before = everything(fast)
    for name, kind, body, status, code in BAD_BODIES:
        headers = {} if kind is None else {"content-type": kind}
        response = both(clients, lambda c: c.post(f"{Q}/{segment}", content=body, headers=headers))
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == problems.MEDIA_TYPE, name
        assert response.json()["code"] == code, name
    assert everything(fast) == before


def test_a_body_without_content_type_is_json_on_every_operation(
    clients: tuple[TestClient, TestClient],
) -> None:
    fast, slow = clients
    for client, task in ((fast, "fast"), (slow, "slow")):
        body = f'{{"id": "{task}", "type": "t"}}'.encode()
        assert client.post(f"{Q}/submit", content=body).status_code == 201
        # an operation off the short path reads it as JSON too
        cancelled = client.post(f"{Q}/cancel", content=f'{{"id": "{task}"}}'.encode())
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
    # and its field errors are the model's, not "not a dictionary"
    response = both(clients, lambda c: c.post(f"{Q}/submit", content=b'{"id": "x", "type": 5}'))
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "type"]]


def test_a_utf8_body_with_a_byte_order_mark_is_read(clients: tuple[TestClient, TestClient]) -> None:
    for client, task in zip(clients, ("fast", "slow"), strict=True):
        body = f'\ufeff{{"id": "{task}", "type": "t", "data": {{"s": "ü"}}}}'.encode()
        assert client.post(f"{Q}/submit", content=body, headers={"content-type": JSON}).status_code == 201
        assert client.get(f"{Q}/tasks/{task}").json()["data"] == {"s": "ü"}


@pytest.mark.parametrize("length", [1, 64, 65, 300, 4000])
def test_any_undeclared_queue_name_is_unknown(clients: tuple[TestClient, TestClient], length: int) -> None:
    name = "z" * length
    for method, suffix, body in [
        ("GET", "", None),
        ("GET", "/tasks", None),
        ("GET", "/tasks/a", None),
        ("POST", "/submit", {"id": "a", "type": "t"}),
        ("POST", "/poll", {"max": 1}),
        ("POST", "/cancel", {"id": "a"}),
    ]:
        response = both(clients, lambda c: c.request(method, f"/v1/queues/{name}{suffix}", json=body))
        assert response.status_code == 404, (method, suffix, response.text)
        assert response.json()["code"] == "unknown_queue"
        assert len(response.json()["detail"]) < 200


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_health_probes_answer_head_without_a_body(clients: tuple[TestClient, TestClient], path: str) -> None:
    client, _ = clients
    got = client.get(path)
    head = client.head(path)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]


def test_head_readyz_says_when_the_service_is_not_ready(clients: tuple[TestClient, TestClient]) -> None:
    client, _ = clients
    client.app.state.runtime.draining = True  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 503
    head = client.head("/readyz")
    assert (head.status_code, head.content) == (503, b"")


def test_415_is_documented_for_every_operation_with_a_body(clients: tuple[TestClient, TestClient]) -> None:
    client, _ = clients
    document = client.get("/openapi.json").json()
    for path in document["paths"].values():
        for operation in path.values():
            assert ("415" in operation["responses"]) == ("requestBody" in operation), operation["operationId"]
            assert list(operation["responses"]) == sorted(operation["responses"])


def test_the_sdk_maps_the_new_codes_back(clients: tuple[TestClient, TestClient]) -> None:
    client, _ = clients
    unsupported = client.post(f"{Q}/submit", content=TEXT.encode(), headers={"content-type": "text/plain"})
    with pytest.raises(UnsupportedMediaTypeError, match="text/plain"):
        raise_for(unsupported)
    malformed = client.post(f"{Q}/submit", content=b"{", headers={"content-type": JSON})
    with pytest.raises(RequestError, match="not JSON") as raised:
        raise_for(malformed)
    assert type(raised.value) is RequestError


# -- the list of codes in the docs is the code's ------------------------------------------------

NOT_ANSWERED = {PerfectQueueError, TaskError, ConfigError}
"""Bases nobody raises, and the error of a configuration refused at start-up."""
CODES_TABLE = ROOT / "docs" / "design.md"
ROW = re.compile(r"^\| `(?P<code>[a-z_]+)` \| (?P<status>\d{3}) \|", re.MULTILINE)


def emitted_codes() -> dict[str, int]:
    """Every code the service can answer with, and its status: the error classes', the HTTP-level
    ones, and every literal ``problem(<status>, "<code>", ...)`` in the service's source."""
    codes = {cls.code: cls.status for cls in ERRORS_BY_CODE.values() if cls not in NOT_ANSWERED}
    codes.update({code: status for status, code in problems.HTTP_CODES.items()})
    for source in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if literal_problem(node):
                status, code = (arg.value for arg in node.args[:2])  # type: ignore[attr-defined]
                codes[code] = status
    return codes


def literal_problem(node: ast.AST) -> bool:
    """A call ``problem(<status>, "<code>", ...)`` (or ``problems.problem``) with both literal."""
    if not isinstance(node, ast.Call) or len(node.args) < 2:
        return False
    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
    return name == "problem" and all(isinstance(arg, ast.Constant) for arg in node.args[:2])


def test_every_code_the_service_emits_is_documented_with_its_status_and_no_other() -> None:
    documented = {m["code"]: int(m["status"]) for m in ROW.finditer(CODES_TABLE.read_text())}
    emitted = emitted_codes()
    assert {"internal", "too_large", "unauthorized", "unknown_endpoint", "unsupported_media_type"} <= set(
        emitted
    )
    assert documented == emitted
