"""Signature V4 on the SQS endpoint: keys with access key ids, their scopes and queues, and every
refusal, with boto3 signing as it does against AWS."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import httpx
import pytest
from botocore import UNSIGNED
from sqs_support import SqsService, client, sqs_service

from perfectqueue.errors import ConfigError
from perfectqueue.service.config import settings_from
from perfectqueue.service.security import hash_key

pytestmark = pytest.mark.slow

SECRETS = {"producer": "producer-secret-0123456789", "worker": "worker-secret-0123456789abc"}
BEARER = "pq_bearer-key-for-the-native-api"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqsService]:
    tmp = tmp_path_factory.mktemp("sqs-auth")
    (tmp / "worker.secret").write_text(SECRETS["worker"] + "\n")  # as a mounted Kubernetes Secret
    keys = [
        {"name": "producer", "access_key_id": "AKIAPRODUCER0000001", "secret_env": "PQ_TEST_SQS_PRODUCER",
         "scopes": ["submit"], "queues": ["q0"]},
        {"name": "worker", "access_key_id": "AKIAWORKER000000001", "secret_file": str(tmp / "worker.secret"),
         "scopes": ["work"]},
        {"name": "native", "hash": hash_key(BEARER), "scopes": ["submit", "work", "admin"]},
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PQ_TEST_SQS_PRODUCER", SECRETS["producer"])
        with sqs_service(tmp, f"sqlite:///{tmp / 'queue.sqlite3'}", api_keys=keys) as running:
            yield running
    log = (tmp / "service.log").read_text()
    assert not any(secret in log for secret in SECRETS.values())


@pytest.fixture
def as_key(service: SqsService) -> Iterator[Any]:
    made: list[Any] = []

    def make(name: str, key_id: str | None = None, secret: str | None = None, **config: Any) -> Any:
        ids = {"producer": "AKIAPRODUCER0000001", "worker": "AKIAWORKER000000001"}
        sqs = client(service.endpoint, key_id or ids[name], secret or SECRETS[name], **config)
        made.append(sqs)
        return sqs

    yield make
    for sqs in made:
        sqs.close()


def code_of(exc: pytest.ExceptionInfo[Any]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_keys_work_within_their_scopes_and_queues(service: SqsService, as_key: Any) -> None:
    producer, worker = as_key("producer"), as_key("worker")
    url = producer.get_queue_url(QueueName="q0")["QueueUrl"]
    producer.send_message(QueueUrl=url, MessageBody="signed")
    [message] = worker.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
    worker.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    assert producer.list_queues()["QueueUrls"] == [url]  # only its queue
    assert len(worker.list_queues()["QueueUrls"]) > 1
    with pytest.raises(producer.exceptions.ClientError) as refused:
        producer.receive_message(QueueUrl=url)  # submit only
    assert code_of(refused) == (403, "AccessDenied")
    with pytest.raises(producer.exceptions.ClientError) as refused:
        producer.send_message(QueueUrl=url.replace("/q0", "/q1"), MessageBody="elsewhere")
    assert code_of(refused) == (403, "AccessDenied")
    with pytest.raises(worker.exceptions.ClientError) as refused:
        worker.purge_queue(QueueUrl=url)  # admin only
    assert code_of(refused) == (403, "AccessDenied")


def test_unknown_key_wrong_secret_and_unsigned_are_refused(as_key: Any) -> None:
    cases = [
        (as_key("producer", key_id="AKIAUNKNOWN00000001"), (403, "InvalidClientTokenId")),
        (as_key("producer", secret="not-the-secret"), (403, "SignatureDoesNotMatch")),
        (as_key("producer", signature_version=UNSIGNED), (403, "MissingAuthenticationToken")),
    ]
    for sqs, expected in cases:
        with pytest.raises(sqs.exceptions.ClientError) as refused:
            sqs.get_queue_url(QueueName="q0")
        assert code_of(refused) == expected


def test_a_body_changed_after_signing_is_refused(service: SqsService, as_key: Any) -> None:
    producer = as_key("producer")
    url = producer.get_queue_url(QueueName="q0")["QueueUrl"]

    def tamper(request: Any, **_kwargs: Any) -> None:
        request.body = request.body.replace(b"pay 10", b"pay 99")

    producer.meta.events.register("before-send.sqs.SendMessage", tamper)
    with pytest.raises(producer.exceptions.ClientError) as refused:
        producer.send_message(QueueUrl=url, MessageBody="pay 10")
    assert code_of(refused) == (403, "SignatureDoesNotMatch")
    worker = as_key("worker")
    assert "Messages" not in worker.receive_message(QueueUrl=url)


def test_a_request_signed_outside_the_clock_skew_is_refused(
    as_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = as_key("producer")
    for minutes in (-6, 6):  # the default sqs_clock_skew is 300 s
        when = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(minutes=minutes)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda when=when: when)
        with pytest.raises(producer.exceptions.ClientError) as refused:
            producer.get_queue_url(QueueName="q0")
        assert code_of(refused) == (400, "RequestExpired")


def test_a_replayed_request_is_served_only_within_the_skew(service: SqsService, as_key: Any) -> None:
    """As at AWS: the signature's date bounds a replay (the previous test shows the refusal)."""
    captured: list[Any] = []
    producer = as_key("producer")

    def capture(request: Any, **_kwargs: Any) -> None:
        captured.append(request)

    producer.meta.events.register("before-send.sqs.GetQueueUrl", capture)
    producer.get_queue_url(QueueName="q0")
    [request] = captured
    replayed = httpx.post(request.url, content=request.body, headers=dict(request.headers.items()))
    assert replayed.status_code == 200
    forged = httpx.post(
        request.url, content=request.body.replace(b"q0", b"q1"), headers=dict(request.headers.items())
    )
    assert forged.status_code == 403
    assert forged.json()["__type"] == "com.amazonaws.sqs#SignatureDoesNotMatch"


def test_the_bearer_keys_still_guard_the_native_api(service: SqsService) -> None:
    assert httpx.get(f"{service.base}/v1/queues").status_code == 401
    ok = httpx.get(f"{service.base}/v1/queues", headers={"Authorization": f"Bearer {BEARER}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"access_key_id": "AKIAEXAMPLE00000001"}, "needs its secret"),
        ({"access_key_id": "AKIAEXAMPLE00000001", "secret_env": "A", "secret_file": "/x"}, "not both"),
        ({"secret_env": "A"}, "a 'hash'"),
        ({}, "a 'hash'"),
        ({"access_key_id": "short", "secret_env": "A"}, "access_key_id"),
    ],
)
def test_bad_access_keys_are_refused(entry: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        settings_from({"api_keys": [{"name": "k", "scopes": ["work"], **entry}]})


def test_a_missing_secret_stops_the_start_without_showing_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(
        {
            "api_keys": [
                {
                    "name": "k",
                    "scopes": ["work"],
                    "access_key_id": "AKIAEXAMPLE00000001",
                    "secret_env": "PQ_NONE",
                }
            ]
        }
    )
    monkeypatch.delenv("PQ_NONE", raising=False)
    with pytest.raises(ConfigError, match="PQ_NONE is empty or unset"):
        settings.api_keys[0].secret()
    monkeypatch.setenv("PQ_NONE", "s3cret-value")
    assert settings.api_keys[0].secret() == "s3cret-value"
