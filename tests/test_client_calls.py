"""The SDK's calls against the service's committed OpenAPI document: each call's request names a
route of the service with its method, and its body or query is one the route's schema accepts; and
the calls that are not safe to repeat are exactly those the retry rules name.

What a call's answer becomes is tested against the real service (test_client*.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from perfectqueue.client import _calls as calls
from perfectqueue.client._types import SubmitSpec

DOCUMENT = json.loads(
    (Path(__file__).resolve().parent.parent / "openapi" / "openapi.json").read_text(encoding="utf-8")
)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FULL_SPEC = SubmitSpec("k", "t", {"a": 1}, "u", 2, 1_700_000_000, "gzip", 3, TRACEPARENT)

EXAMPLES: list[calls.Call[Any]] = [
    calls.Submit(FULL_SPEC),
    calls.Submit(SubmitSpec("k", "t")),
    calls.SubmitMany([FULL_SPEC, SubmitSpec("k2", "t")]),
    calls.Poll(5, 60, 1.5),
    calls.Poll(1, None, 0.0),
    calls.Heartbeat("k", "1", 60, {"a": 2}),
    calls.Heartbeat("k", "1"),
    calls.HeartbeatMany([("k", "1"), ("k2", "2")], 60),
    calls.Finish("k", "1"),
    calls.FinishMany([("k", "1")]),
    calls.Retry("k", "1", 10, "ValueError: boom"),
    calls.Retry("k", "1"),
    calls.Release("k", "1"),
    calls.RetryMany([("k", "1", 10, "ValueError: boom", False), ("k2", "2", None, None, True)]),
    calls.ReleaseMany([("k", "1"), ("k2", "2")]),
    calls.ForceFinish("k"),
    calls.Cancel("k"),
    calls.Requeue("k"),
    calls.Get("k/1"),
    calls.Get(".."),
    calls.ListTasks("waiting", "t", "u", "c", 10),
    calls.ListTasks(None, None, None, None, 100),
    calls.Stats(),
    calls.Pause(True),
    calls.Pause(False),
    calls.Bulk("requeue", "dead", "mail", None, "m-", "c", 10),
    calls.Bulk("cancel", "waiting"),
    calls.Retry("k", "1", None, "UnknownType: no route", dead=True),
]


def operations() -> set[type[calls.Call[Any]]]:
    """Every concrete call class of the SDK."""
    found, todo = set(), list(calls.Call.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        # dataclass(slots=True) makes a new class: the one the module binds is the SDK's
        if not getattr(cls, "__abstractmethods__", None) and getattr(calls, cls.__name__) is cls:
            found.add(cls)
    return found


def route(method: str, path: str) -> dict[str, Any]:
    """The OpenAPI operation of the service that ``method path`` reaches."""
    for template, item in DOCUMENT["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) and method.lower() in item:
            return dict(item[method.lower()])
    raise AssertionError(f"the service has no route {method} {path}")


def valid(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, {**schema, "components": DOCUMENT["components"]})


def test_every_operation_has_an_example() -> None:
    assert {type(call) for call in EXAMPLES} == operations()
    assert len({call.op for call in EXAMPLES}) == len(operations())


@pytest.mark.parametrize("call", EXAMPLES, ids=repr)
def test_each_call_is_a_request_the_service_accepts(call: calls.Call[Any]) -> None:
    http = call.http()
    operation = route(http.method, f"/v1/queues/q{http.path}")
    body = operation.get("requestBody")
    if body is None:
        assert http.json is None
    else:
        assert http.json is not None, "the route takes a body"
        valid(http.json, body["content"]["application/json"]["schema"])
    query = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
    for name, value in (http.params or {}).items():
        assert name in query, f"the route has no query parameter {name!r}"
        valid(value, query[name]["schema"])


def test_a_dot_segment_id_reaches_the_task_not_the_queue() -> None:
    assert calls.Get("..").http().path == "/tasks/%2E%2E"
    assert calls.Get("a/b").http().path == "/tasks/a%2Fb"


def test_only_retries_releases_and_requeue_are_unsafe_to_repeat() -> None:
    unsafe = {cls.op for cls in operations() if not cls.repeatable}
    assert unsafe == {"retry", "retry_many", "release", "release_many", "requeue"}


def test_only_a_poll_holds_the_request_longer() -> None:
    assert {call.op: call.wait for call in EXAMPLES if call.wait} == {"poll": 1.5}
