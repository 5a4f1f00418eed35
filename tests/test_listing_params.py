"""The listing's query parameters under hostile input, in process against the real app on each
backend: whatever a client sends (control characters, unicode digits, huge numbers, bytes that are
not UTF-8, empty strings), the answer is never 5xx and every refusal is a problem (RFC 9457);
what the listing cannot parse is ``422 invalid``, and the cursors it hands out keep working.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import drop_table
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.store import Database

with warnings.catch_warnings():
    # starlette asks for httpx2 (not a dependency of this project) with a warning at import.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TASKS = "/v1/queues/q/tasks"
PARAMS = ("cursor", "limit", "status", "leased", "order", "type", "user", "prefix")
CRAFTED = [
    "²:x",  # "²".isdigit() is true and int("²") raises
    "\u0661\u0662:x",  # Arabic-Indic digits: int() reads them
    "\uff11:x",  # a fullwidth digit
    "9" * 40 + ":x",  # past every integer column (and SQLite's 64 bits)
    "2147483648:x",  # one past the timeout column's INT
    "-1:x",
    "+1:x",
    " 1:x",
    "1_0:x",
    "1:",
    ":x",
    ":",
    "1",
    "",
    "\x00",
    "a\x00b",
    "\x1f",
    "\x7f",
    "\x85",
    "\ufffd",
    "x" * 256,
    "é" * 128,  # 256 UTF-8 bytes
]
RAW = [b"\xff", b"\xed\xa0\x80", b"\xc2", b"\x80:x", b"1:\xed\xb2\x80"]  # not UTF-8 (a lone surrogate too)


@pytest.fixture
def client(db_url: str, table_name: str) -> Iterator[TestClient]:
    """A client of a fresh app serving queue ``q`` with tasks in several states."""
    app = create_app(
        settings_from({"url": db_url, "queues": {"q": {"table": table_name}}, "auto_init": True})
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        for i in range(5):
            body = {"id": f"t{i}", "type": "even" if i % 2 == 0 else "odd", "user": f"u{i % 2}"}
            assert client.post("/v1/queues/q/submit", json=body).status_code == 201
        assert client.post("/v1/queues/q/poll", json={"max": 2}).status_code == 200
        yield client
    if not db_url.startswith("sqlite"):
        db = Database(db_url)
        drop_table(db, table_name)
        db.dispose()


def listing(client: TestClient, params: dict[str, bytes]) -> httpx.Response:
    """GET the listing with these raw (percent-encoded on the wire) parameter values."""
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    return client.get(f"{TASKS}?{query}")


def assert_answered(response: httpx.Response) -> None:
    """Not a server error; a refusal is a problem with its code (422: invalid)."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].split(";")[0] == "application/problem+json"
        body = response.json()
        assert body["status"] == response.status_code
        assert response.status_code != 422 or body["code"] == "invalid", body


def assert_invalid(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    assert response.json()["code"] == "invalid"


def values(name: str, cursors: list[str]) -> st.SearchStrategy[bytes]:
    """What a client might send as ``name``: valid values, crafted ones, any text, any bytes."""
    valid = {
        "cursor": st.sampled_from(cursors),
        "limit": st.integers(-5, 1005).map(str),
        "status": st.sampled_from(["waiting", "running", "finished", "dead", "cancelled"]),
        "leased": st.sampled_from(["true", "false"]),
        "order": st.sampled_from(["id", "due"]),
    }.get(name, st.sampled_from(["t0", "t", "even", "u0"]))
    digits = st.from_regex(
        "\\A[0-9\u00b2\u00b3\u00b9\u0661-\u0669\uff10-\uff19]{0,12}(:[\x00-\x7f]{0,3})?\\Z"
    )
    text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
    strings = st.one_of(valid, st.sampled_from(CRAFTED), digits, text).map(str.encode)
    return st.one_of(strings, st.sampled_from(RAW), st.binary(max_size=6))


@pytest.mark.parametrize("order", ["id", "due"])
def test_no_listing_parameter_gives_a_server_error(client: TestClient, order: str) -> None:
    first = client.get(TASKS, params={"order": order, "limit": 1}).json()
    cursors = [first["next_cursor"], "t0", "1:t0", "1300000000:t2", "2147483647:~"]
    params = st.fixed_dictionaries({}, optional={name: values(name, cursors) for name in PARAMS})

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(params)
    @example({"cursor": "²:x".encode()}).via("the crafted cursor of the report")
    @example({"cursor": b"9" * 40 + b":x"})
    def check(params: dict[str, bytes]) -> None:
        assert_answered(listing(client, {"order": order.encode(), **params}))

    check()


def test_the_reported_cursor_is_invalid(client: TestClient) -> None:
    assert_invalid(client.get(f"{TASKS}?order=due&cursor=%C2%B2:x"))


NAMES = ["", "\x00", "a\x00b", "a\tb", "\x7f", "\x85", "é" * 128]
"""Not names a submit accepts, but names a table shared with the original may hold."""


def test_any_name_the_table_may_hold_can_be_listed_by(client: TestClient, db_url: str) -> None:
    def expected(value: str) -> set[int]:
        # PostgreSQL's text holds no NUL: where a value with one reaches SQL, it is invalid
        return {200, 422} if "\x00" in value and db_url.startswith("postgres") else {200}

    for order in ("id", "due"):
        for name in ("type", "user", "prefix"):
            for value in NAMES:
                response = client.get(TASKS, params={"order": order, name: value})
                assert response.status_code in expected(value), (order, name, value, response.text)
        for value in NAMES[1:]:  # an id (id order) or <timeout>:<id> (due order)
            cursor = value if order == "id" else f"1300000000:{value}"
            response = client.get(TASKS, params={"order": order, "cursor": cursor})
            assert response.status_code in expected(value), (order, value, response.text)


def test_a_name_over_255_characters_is_invalid(client: TestClient) -> None:
    for name in ("type", "user", "prefix"):
        assert_invalid(client.get(TASKS, params={name: "x" * 256}))


def test_a_due_cursor_not_of_ascii_digits_within_range_is_invalid(client: TestClient) -> None:
    for cursor in [*CRAFTED, "2147483647"]:
        assert_invalid(client.get(TASKS, params={"order": "due", "cursor": cursor}))


def test_a_well_formed_due_cursor_is_accepted(client: TestClient) -> None:
    for cursor in ["0:t0", "2147483647:t0", "0000000001:x:y", "1300000000:~"]:
        response = client.get(TASKS, params={"order": "due", "cursor": cursor})
        assert response.status_code == 200, (cursor, response.text)


@pytest.mark.parametrize("order", ["id", "due"])
def test_the_cursors_a_listing_returns_walk_every_task_once(client: TestClient, order: str) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"order": order, "limit": 1}
    while True:
        body = client.get(TASKS, params=params).json()
        seen += [task["id"] for task in body["tasks"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert sorted(seen) == [f"t{i}" for i in range(5)]
