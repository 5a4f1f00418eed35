"""The committed OpenAPI document: current, and complete enough to generate a client from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from perfectqueue.service import models
from perfectqueue.service.openapi import document

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
PROBLEM_REF = "#/components/schemas/Problem"


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    """The app's document as JSON would carry it."""
    loaded: dict[str, Any] = json.loads(json.dumps(document()))
    return loaded


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


def differences(a: Any, b: Any, where: str = "") -> Iterator[str]:
    """JSON pointers at which two documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from differences(a.get(key), b.get(key), f"{where}/{key}")
    elif a != b:
        yield where or "/"


def test_committed_document_is_current(current: dict[str, Any]) -> None:
    assert COMMITTED.is_file(), "openapi/openapi.json is missing: run ./dev openapi and commit it"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    if committed != current:
        changed = list(differences(committed, current))
        pytest.fail(
            "openapi/openapi.json differs from the app's OpenAPI document; run ./dev openapi and commit "
            f"openapi/openapi.json. Differences at: {', '.join(changed[:10])}"
            + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        )


def test_the_drift_check_sees_a_change(current: dict[str, Any]) -> None:
    changed = json.loads(json.dumps(current))
    changed["paths"]["/v1/queues/{queue}/submit"]["post"]["summary"] = "something else"
    assert list(differences(current, changed)) == ["/paths//v1/queues/{queue}/submit/post/summary"]


def test_every_operation_has_a_unique_id_and_a_summary(current: dict[str, Any]) -> None:
    ids = []
    for name, operation in operations(current):
        assert operation.get("operationId"), f"{name} has no operationId"
        assert operation.get("summary"), f"{name} has no summary"
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert len(ids) >= 14


def has_example(doc: dict[str, Any], content: dict[str, Any] | None) -> bool:
    for media in (content or {}).values():
        if "example" in media or media.get("examples"):
            return True
        schema = resolve(doc, media.get("schema", {}))
        if schema.get("examples") or "example" in schema:
            return True
    return False


def test_every_operation_has_an_example(current: dict[str, Any]) -> None:
    missing = []
    for name, operation in operations(current):
        request = operation.get("requestBody", {}).get("content")
        successes = [r.get("content") for s, r in operation["responses"].items() if s.startswith("2")]
        if not (has_example(current, request) or any(has_example(current, c) for c in successes)):
            missing.append(name)
    assert missing == [], f"operations without an example in their request or success schema: {missing}"


def test_every_model_has_examples_that_it_accepts(current: dict[str, Any]) -> None:
    checked = 0
    for name, schema in current["components"]["schemas"].items():
        model = getattr(models, name, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        assert schema.get("examples"), f"the model {name} has no examples"
        for example in schema["examples"]:
            model.model_validate(example)
        checked += 1
    assert checked >= 15


def test_every_error_response_is_a_problem(current: dict[str, Any]) -> None:
    for name, operation in operations(current):
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                continue
            content = response.get("content", {})
            assert "application/problem+json" in content, f"{name} {status} is not a problem"
            assert content["application/problem+json"].get("schema") == {"$ref": PROBLEM_REF}, (name, status)
    problem = resolve(current, {"$ref": PROBLEM_REF})
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])


def test_operations_on_a_queue_document_unknown_queue_and_invalid(current: dict[str, Any]) -> None:
    for name, operation in operations(current):
        if "{queue}" in name:
            assert {"404", "422", "503"} <= set(operation["responses"]), name


def test_no_validation_error_schema_that_the_service_never_sends(current: dict[str, Any]) -> None:
    schemas = current["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
