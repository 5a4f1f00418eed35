"""The SQS endpoint with boto3 (the JSON protocol), against a real service on each backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import require_mysql
from sdk_support import wait_for
from sqs_support import SqsService, client, sqs_service

import perfectqueue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqsService]:
    tmp = tmp_path_factory.mktemp("sqs")
    url = require_mysql() if request.param == "mysql" else f"sqlite:///{tmp / 'queue.sqlite3'}"
    with sqs_service(tmp, url) as running:
        yield running


@pytest.fixture
def sqs(service: SqsService) -> Iterator[Any]:
    sqs = client(service.endpoint)
    yield sqs
    sqs.close()


@pytest.fixture
def queue(service: SqsService, sqs: Any) -> str:
    """The URL of an empty queue."""
    url: str = sqs.get_queue_url(QueueName=service.fresh())["QueueUrl"]
    return url


def native(service: SqsService, url: str) -> perfectqueue.Queue:
    return perfectqueue.open({"url": service.base, "queue": url.rsplit("/", 1)[1]})


def receive(sqs: Any, url: str, **options: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(QueueUrl=url, **options).get("Messages", [])
    return messages


def test_queues_are_found_by_name_and_listed(service: SqsService, sqs: Any, queue: str) -> None:
    assert queue == f"{service.endpoint}/000000000000/{queue.rsplit('/', 1)[1]}"
    listed = sqs.list_queues(QueueNamePrefix="q1")["QueueUrls"]
    assert f"{service.endpoint}/000000000000/q1" in listed
    assert all(url.rsplit("/", 1)[1].startswith("q1") for url in listed)
    assert sqs.create_queue(QueueName="q1")["QueueUrl"] == f"{service.endpoint}/000000000000/q1"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="undeclared")
    with pytest.raises(sqs.exceptions.UnsupportedOperation):
        sqs.create_queue(QueueName="undeclared")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as refused:
        sqs.send_message(QueueUrl=f"{service.endpoint}/000000000000/undeclared", MessageBody="x")
    assert refused.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


def test_a_message_round_trips_byte_for_byte_with_its_attributes(sqs: Any, queue: str) -> None:
    body = 'tab\t, CR LF\r\n, quote ", <xml/> & emoji \U0001f600, \ue000 and {"json": true}'
    attributes = {
        "text": {"DataType": "String", "StringValue": "värde"},
        "count": {"DataType": "Number.int", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff\x10"},
    }
    sent = sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=attributes)  # MD5s checked

    [message] = receive(sqs, queue, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    assert message["MessageId"] == sent["MessageId"]
    assert message["Body"] == body
    assert message["MessageAttributes"] == attributes
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert abs(int(message["Attributes"]["SentTimestamp"]) / 1000 - time.time()) < 60
    [only] = receive(sqs, queue, MaxNumberOfMessages=1) or [None]
    assert only is None  # in flight: not delivered twice
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])  # idempotent, as SQS


def test_invalid_messages_are_refused_with_sqs_codes(sqs: Any, queue: str) -> None:
    with pytest.raises(sqs.exceptions.InvalidMessageContents):
        sqs.send_message(QueueUrl=queue, MessageBody="bell \x07")
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=11)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.send_message(QueueUrl=queue, MessageBody="x", DelaySeconds=901)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="not-a-receipt")
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.send_message(QueueUrl=queue, MessageBody="x" * (600 * 1024))  # over max_data_bytes
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert receive(sqs, queue) == []


def test_batches_answer_each_entry(sqs: Any, queue: str) -> None:
    sent = sqs.send_message_batch(
        QueueUrl=queue,
        Entries=[{"Id": "good", "MessageBody": "one"}, {"Id": "bad", "MessageBody": "nul \x00"}],
    )
    assert [e["Id"] for e in sent["Successful"]] == ["good"]
    assert [(e["Id"], e["Code"], e["SenderFault"]) for e in sent["Failed"]] == [
        ("bad", "InvalidMessageContents", True)
    ]
    [message] = receive(sqs, queue, MaxNumberOfMessages=10)
    deleted = sqs.delete_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "a", "ReceiptHandle": message["ReceiptHandle"]},
            {"Id": "b", "ReceiptHandle": "forged"},
        ],
    )
    assert [e["Id"] for e in deleted["Successful"]] == ["a"]
    assert [(e["Id"], e["Code"]) for e in deleted["Failed"]] == [("b", "ReceiptHandleIsInvalid")]
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.send_message_batch(QueueUrl=queue, Entries=[])
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(
            QueueUrl=queue, Entries=[{"Id": f"e{i}", "MessageBody": "x"} for i in range(11)]
        )
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.delete_message_batch(QueueUrl=queue, Entries=[{"Id": "x", "ReceiptHandle": "r"}] * 2)
    assert receive(sqs, queue) == []


def test_ten_per_receive_and_per_delete_batch(sqs: Any, queue: str) -> None:
    for start in (0, 10):
        entries = [{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(start, start + 10)]
        assert len(sqs.send_message_batch(QueueUrl=queue, Entries=entries)["Successful"]) == 10
    bodies: set[str] = set()
    while len(bodies) < 20:
        messages = receive(sqs, queue, MaxNumberOfMessages=10)
        assert 1 <= len(messages) <= 10
        bodies |= {m["Body"] for m in messages}
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        assert not sqs.delete_message_batch(QueueUrl=queue, Entries=entries)["Failed"]
    assert bodies == {f"body {i}" for i in range(20)}


def in_flight(service: SqsService) -> float:
    metrics = httpx.get(service.base + "/metrics", timeout=10).text
    [line] = [m for m in metrics.splitlines() if m.startswith("perfectqueue_http_requests_in_flight ")]
    return float(line.split()[1])


def test_a_long_poll_wakes_when_a_message_arrives(service: SqsService, sqs: Any, queue: str) -> None:
    got: list[Any] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        consumer_client = client(queue.rsplit("/", 2)[0])
        got.extend(receive(consumer_client, queue, WaitTimeSeconds=15))
        consumer_client.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    started.wait()
    wait_for(lambda: in_flight(service) >= 2)  # the receive waits (the other one: this scrape)
    sent_at = time.monotonic()
    sqs.send_message(QueueUrl=queue, MessageBody="wake up")
    consumer.join(20)
    assert [m["Body"] for m in got] == ["wake up"]
    assert time.monotonic() - sent_at < 2  # woken by the send, not at the end of the wait


def test_visibility_expiry_redelivers_and_fences_the_old_receipt(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="again")
    [first] = receive(sqs, queue, VisibilityTimeout=1)
    [second] = receive(sqs, queue, VisibilityTimeout=60, WaitTimeSeconds=10, AttributeNames=["All"])
    assert second["MessageId"] == first["MessageId"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):  # another consumer holds it now
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.change_message_visibility(
            QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5
        )
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=second["ReceiptHandle"])
    assert receive(sqs, queue) == []


def test_change_visibility_extends_or_releases(sqs: Any, queue: str) -> None:
    sqs.send_message_batch(
        QueueUrl=queue, Entries=[{"Id": "a", "MessageBody": "a"}, {"Id": "b", "MessageBody": "b"}]
    )
    held = receive(sqs, queue, MaxNumberOfMessages=10, VisibilityTimeout=1)
    assert len(held) == 2
    by_body = {m["Body"]: m["ReceiptHandle"] for m in held}
    changed = sqs.change_message_visibility_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": "keep", "ReceiptHandle": by_body["a"], "VisibilityTimeout": 120},
            {"Id": "free", "ReceiptHandle": by_body["b"], "VisibilityTimeout": 0},
            {"Id": "junk", "ReceiptHandle": "junk", "VisibilityTimeout": 10},
        ],
    )
    assert sorted(e["Id"] for e in changed["Successful"]) == ["free", "keep"]
    assert [e["Code"] for e in changed["Failed"]] == ["ReceiptHandleIsInvalid"]
    [again] = receive(sqs, queue, MaxNumberOfMessages=10)  # b at once; a stays hidden past its 1 s
    assert again["Body"] == "b"
    time.sleep(1.5)
    assert receive(sqs, queue, MaxNumberOfMessages=10) == []
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=0)
    assert [m["Body"] for m in receive(sqs, queue, WaitTimeSeconds=5)] == ["b"]


def test_deduplication_id_makes_sends_idempotent(service: SqsService, sqs: Any, queue: str) -> None:
    first = sqs.send_message(QueueUrl=queue, MessageBody="once", MessageDeduplicationId="order-17")
    again = sqs.send_message(QueueUrl=queue, MessageBody="once", MessageDeduplicationId="order-17")
    assert first["MessageId"] == again["MessageId"] == "order-17"
    batch = sqs.send_message_batch(
        QueueUrl=queue, Entries=[{"Id": "e", "MessageBody": "once", "MessageDeduplicationId": "order-17"}]
    )
    assert [e["MessageId"] for e in batch["Successful"]] == ["order-17"]
    [message] = receive(sqs, queue, MaxNumberOfMessages=10)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    sqs.send_message(
        QueueUrl=queue, MessageBody="once", MessageDeduplicationId="order-17"
    )  # finished: still one
    assert receive(sqs, queue) == []
    with native(service, queue) as reader:
        assert reader["order-17"].metadata().status == "finished"


def test_delay_seconds_schedules_the_message(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="later", DelaySeconds=2)
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert receive(sqs, queue) == []
    started = time.monotonic()
    [message] = receive(sqs, queue, WaitTimeSeconds=10)
    assert message["Body"] == "later"
    assert 0.5 < time.monotonic() - started < 5


def test_message_groups_are_users_with_max_running(service: SqsService, sqs: Any, queue: str) -> None:
    limit = {"perfectqueue.max_running": {"DataType": "Number", "StringValue": "1"}}
    for group in ("ann", "bob"):
        entries = [
            {
                "Id": f"{group}{i}",
                "MessageBody": f"{group} {i}",
                "MessageGroupId": group,
                "MessageAttributes": limit,
            }
            for i in range(4)
        ]
        sqs.send_message_batch(QueueUrl=queue, Entries=entries)
    held = receive(sqs, queue, MaxNumberOfMessages=10, AttributeNames=["MessageGroupId"])
    assert sorted(m["Attributes"]["MessageGroupId"] for m in held) == ["ann", "bob"]  # one each at a time
    assert receive(sqs, queue, MaxNumberOfMessages=10) == []
    with native(service, queue) as reader:
        assert {t.user for t in reader.tasks(status="running")} == {"ann", "bob"}
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(held)]
    sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
    assert len(receive(sqs, queue, MaxNumberOfMessages=10, WaitTimeSeconds=5)) == 2


def test_queue_attributes_count_and_describe_the_queue(service: SqsService, sqs: Any, queue: str) -> None:
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(3)])
    receive(sqs, queue)
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "2"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert attributes["VisibilityTimeout"] == "300"  # the queue's alive_time
    assert attributes["QueueArn"] == f"arn:aws:sqs:eu-west-1:000000000000:{queue.rsplit('/', 1)[1]}"
    assert '"maxReceiveCount": 10' in attributes["RedrivePolicy"]  # the default max_attempts
    one = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert one == {"VisibilityTimeout": "300"}
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["Nonsense"])


def test_attempts_exhausted_end_dead_and_requeue_is_the_redrive(service: SqsService, sqs: Any) -> None:
    url = sqs.get_queue_url(QueueName="dl")["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert '"maxReceiveCount": 1' in policy["RedrivePolicy"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="fragile")
    assert len(receive(sqs, url, VisibilityTimeout=1)) == 1
    with native(service, url) as operator:
        dead = operator[sent["MessageId"]]
        # once the lease expired, the next receive finds the attempts used up: nothing delivered
        wait_for(lambda: receive(sqs, url, WaitTimeSeconds=1) == [] and dead.metadata().status == "dead")
        dead.requeue()
    [again] = receive(sqs, url, WaitTimeSeconds=5)
    assert again["Body"] == "fragile"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])


def test_sqs_consumer_drains_what_native_clients_filled(service: SqsService, sqs: Any, queue: str) -> None:
    with native(service, queue) as producer:
        producer.submit("mail-1", "mail", {"to": "ann@example.com"})
        producer.submit("sqs-shaped", "sqs", {"body": "plain text"})
    got = wait_for(lambda: receive(sqs, queue, MaxNumberOfMessages=10, WaitTimeSeconds=1) or None)
    got += receive(sqs, queue, MaxNumberOfMessages=10)
    bodies = {m["MessageId"]: m["Body"] for m in got}
    assert bodies == {"mail-1": '{"type":"mail","to":"ann@example.com"}', "sqs-shaped": "plain text"}
    sqs.delete_message_batch(
        QueueUrl=queue,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
    )
    with native(service, queue) as reader:
        assert {t.status for t in reader.tasks()} == {"finished"}


def test_native_worker_drains_what_sqs_producers_sent(service: SqsService, sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="hello", MessageGroupId="ann")
    typed = {"perfectqueue.type": {"DataType": "String", "StringValue": "resize"}}
    sqs.send_message(QueueUrl=queue, MessageBody="img.png", MessageAttributes=typed)
    with native(service, queue) as worker:
        tasks = worker.poll_multi(max=10, wait=5)
        assert sorted((t.type, t.user, t.data["body"]) for t in tasks) == [
            ("resize", None, "img.png"),
            ("sqs", "ann", "hello"),
        ]
        for task in tasks:
            task.finish()
    assert receive(sqs, queue) == []


def test_purge_finishes_every_message(sqs: Any, queue: str) -> None:
    sqs.send_message_batch(QueueUrl=queue, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(5)])
    [held] = receive(sqs, queue)
    sqs.purge_queue(QueueUrl=queue)
    assert receive(sqs, queue, MaxNumberOfMessages=10) == []
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.change_message_visibility(
            QueueUrl=queue, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=9
        )
