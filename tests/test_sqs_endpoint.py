"""The SQS endpoint's edges that no SDK sends on purpose: the layer's own refusals, the Query
protocol by GET, the endpoint switched off, and what the metrics call its requests."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perfectqueue.service.app import create_app
from perfectqueue.service.config import settings_from
from perfectqueue.service.sqs import queues

with warnings.catch_warnings():
    # starlette asks for httpx2 (not a dependency of this project) with a warning at import.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

JSON = {"Content-Type": "application/x-amz-json-1.0"}


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        values = {"url": f"sqlite:///{tmp_path / 'q.sqlite3'}", "queues": {"q": {"table": "t_q"}}, **settings}
        client = TestClient(create_app(settings_from(values))).__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def target(action: str) -> dict[str, str]:
    return {**JSON, "X-Amz-Target": f"AmazonSQS.{action}"}


def test_unknown_and_unsupported_actions_and_methods(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    unknown = client.post("/sqs", content=b"{}", headers=target("Fly"))
    assert (unknown.status_code, unknown.json()["__type"]) == (400, "com.amazonaws.sqs#InvalidAction")
    deleting = client.post("/sqs", content=b"{}", headers=target("DeleteQueue"))
    assert deleting.json()["__type"] == "com.amazonaws.sqs#UnsupportedOperation"
    assert deleting.headers["x-amzn-query-error"] == "AWS.SimpleQueueService.UnsupportedOperation;Sender"
    assert deleting.headers["x-amzn-requestid"] == deleting.headers["x-request-id"]  # the access line's
    assert client.put("/sqs", content=b"{}", headers=target("ListQueues")).status_code == 405
    broken = client.post("/sqs", content=b"{not json", headers=target("ListQueues"))
    assert broken.json()["__type"] == "com.amazonaws.sqs#InvalidParameterValue"


def test_the_query_protocol_by_get_and_posted_to_the_queue_url(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    listed = client.get("/sqs", params={"Action": "ListQueues", "Version": "2012-11-05"})
    assert listed.status_code == 200
    assert "<QueueUrl>http://testserver/sqs/000000000000/q</QueueUrl>" in listed.text
    sent = client.post("/sqs/000000000000/q", data={"Action": "SendMessage", "MessageBody": "to the URL"})
    assert "<MD5OfMessageBody>" in sent.text
    deep = client.post("/sqs", data={"Action": "ListQueues", "a" + ".a" * 100_000: "x"})
    assert (deep.status_code, "<Code>InvalidParameterValue</Code>" in deep.text) == (400, True)
    missing = client.post("/sqs", data={"Version": "2012-11-05"})
    assert (missing.status_code, "<Code>MissingAction</Code>" in missing.text) == (400, True)


def test_a_body_over_the_limit_is_refused_unread(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=2048, max_data_bytes=1024)
    body = {"Action": "SendMessage", "QueueUrl": "q", "MessageBody": "x" * 3000}
    refused = client.post("/sqs", data=body)
    assert refused.status_code == 400
    assert "<Code>InvalidParameterValue</Code>" in refused.text and "max_body_bytes" in refused.text


def test_the_endpoint_can_be_switched_off(make_client: Callable[..., TestClient]) -> None:
    client = make_client(sqs=False)
    assert client.post("/sqs", content=b"{}", headers=target("ListQueues")).status_code == 404


def test_requests_are_counted_under_the_route_sqs(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    client.post("/sqs", content=b"{}", headers=target("ListQueues"))
    assert 'route="/sqs",status="200"' in client.get("/metrics").text


def test_a_purge_is_bounded_and_goes_on_at_the_next_call(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queues, "PURGE_LIMIT", 3)
    monkeypatch.setattr(queues, "PAGE", 2)
    client = make_client()
    for i in range(5):
        client.post("/sqs/000000000000/q", data={"Action": "SendMessage", "MessageBody": f"m{i}"})
    first = client.post("/sqs/000000000000/q", data={"Action": "PurgeQueue"})
    assert (first.status_code, "PurgeQueueInProgress" in first.text) == (403, True)
    assert client.post("/sqs/000000000000/q", data={"Action": "PurgeQueue"}).status_code == 200
    counted = client.post(
        "/sqs/000000000000/q", data={"Action": "GetQueueAttributes", "AttributeName.1": "All"}
    )
    assert "<Name>ApproximateNumberOfMessages</Name><Value>0</Value>" in counted.text
