"""The SQS endpoint's Query protocol (form-encoded requests, XML answers), with botocore speaking it.

Current botocore speaks SQS's JSON protocol only. Older SDKs and tools send Query; botocore is
told to here by loading its own SQS model with the protocol switched to ``query`` and the
Query-era element names put back (``Attribute.N.Name``, ``SendMessageBatchRequestEntry.N``,
``<Message>``, ...): the serializer and the XML parser are botocore's own.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from sqs_support import SqsService, sqs_service

pytestmark = pytest.mark.slow

ELEMENTS = {
    "CreateQueueRequest": {"Attributes": "Attribute", "tags": "Tag"},
    "GetQueueAttributesRequest": {"AttributeNames": "AttributeName"},
    "GetQueueAttributesResult": {"Attributes": "Attribute"},
    "ReceiveMessageRequest": {
        "AttributeNames": "AttributeName",
        "MessageSystemAttributeNames": "MessageSystemAttributeName",
        "MessageAttributeNames": "MessageAttributeName",
    },
    "ReceiveMessageResult": {"Messages": "Message"},
    "Message": {"Attributes": "Attribute", "MessageAttributes": "MessageAttribute"},
    "SendMessageRequest": {"MessageAttributes": "MessageAttribute"},
    "SendMessageBatchRequest": {"Entries": "SendMessageBatchRequestEntry"},
    "SendMessageBatchRequestEntry": {"MessageAttributes": "MessageAttribute"},
    "SendMessageBatchResult": {
        "Successful": "SendMessageBatchResultEntry",
        "Failed": "BatchResultErrorEntry",
    },
    "DeleteMessageBatchRequest": {"Entries": "DeleteMessageBatchRequestEntry"},
    "DeleteMessageBatchResult": {
        "Successful": "DeleteMessageBatchResultEntry",
        "Failed": "BatchResultErrorEntry",
    },
    "ChangeMessageVisibilityBatchRequest": {"Entries": "ChangeMessageVisibilityBatchRequestEntry"},
    "ChangeMessageVisibilityBatchResult": {
        "Successful": "ChangeMessageVisibilityBatchResultEntry",
        "Failed": "BatchResultErrorEntry",
    },
    "ListQueuesResult": {"QueueUrls": "QueueUrl"},
}
MAPS = ("QueueAttributeMap", "MessageSystemAttributeMap", "MessageBodyAttributeMap")


def query_model() -> dict[str, Any]:
    """botocore's SQS model, speaking the Query protocol."""
    model = copy.deepcopy(
        botocore.session.get_session().get_component("data_loader").load_service_model("sqs", "service-2")
    )
    model["metadata"].update(
        protocol="query", protocols=["query"], xmlNamespace="http://queue.amazonaws.com/doc/2012-11-05/"
    )
    for name, operation in model["operations"].items():
        if "output" in operation:
            operation["output"]["resultWrapper"] = f"{name}Result"
    shapes = model["shapes"]
    for shape, members in ELEMENTS.items():
        for member, element in members.items():
            shapes[shape]["members"][member]["locationName"] = element
    for shape in MAPS:
        shapes[shape]["key"]["locationName"] = "Name"
        shapes[shape]["value"]["locationName"] = "Value"
    return model


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqsService]:
    tmp = tmp_path_factory.mktemp("sqs-query")
    with sqs_service(tmp, f"sqlite:///{tmp / 'queue.sqlite3'}") as running:
        yield running


def query_client(tmp_path: Path, endpoint: str, key_id: str = "k", secret: str = "s") -> Any:
    """A boto3 client speaking the Query protocol (botocore's model, switched)."""
    models = tmp_path / "models" / "sqs" / "2012-11-05"
    models.mkdir(parents=True, exist_ok=True)
    (models / "service-2.json").write_text(json.dumps(query_model()))
    core = botocore.session.get_session()
    core.get_component("data_loader").search_paths.insert(0, str(tmp_path / "models"))
    return boto3.session.Session(botocore_session=core).client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


@pytest.fixture
def sqs(service: SqsService, tmp_path: Path) -> Iterator[Any]:
    sqs = query_client(tmp_path, service.endpoint)
    sent: list[Any] = []
    sqs.meta.events.register("before-send.sqs", lambda request, **_: sent.append(request))
    yield sqs
    assert sent and all("Action=" in str(r.body) and "x-amz-target" not in r.headers for r in sent)  # Query
    sqs.close()


def test_a_consumer_loop_over_the_query_protocol(service: SqsService, sqs: Any) -> None:
    url = sqs.get_queue_url(QueueName=service.fresh())["QueueUrl"]
    body = "line\r\nnext < & > ünïcode \U0001f600"
    attributes = {
        "kind": {"DataType": "String", "StringValue": "a&b"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x01\x02"},
    }
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)  # MD5s checked
    sent = sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "b1"}, {"Id": "b", "MessageBody": "\x00"}]
    )
    assert [e["Id"] for e in sent["Successful"]] == ["a"]
    assert [(e["Id"], e["Code"], e["SenderFault"]) for e in sent["Failed"]] == [
        ("b", "InvalidMessageContents", True)
    ]

    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"
    ]
    assert counts == {"ApproximateNumberOfMessages": "2"}
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
    )["Messages"]
    by_body = {m["Body"]: m for m in messages}
    assert set(by_body) == {body, "b1"}
    assert by_body[body]["MessageAttributes"] == attributes
    assert by_body[body]["Attributes"]["ApproximateReceiveCount"] == "1"
    changed = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "x", "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 60} for m in messages[:1]
        ],
    )
    assert [e["Id"] for e in changed["Successful"]] == ["x"]
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
    )
    assert len(deleted["Successful"]) == 2
    assert "Failed" not in deleted  # an empty list is no element in XML
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert url in sqs.list_queues()["QueueUrls"]


def test_errors_in_the_query_shape(service: SqsService, sqs: Any) -> None:
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.get_queue_url(QueueName="undeclared")
    error = refused.value.response["Error"]
    assert (error["Code"], error["Type"]) == ("AWS.SimpleQueueService.NonExistentQueue", "Sender")
    url = sqs.get_queue_url(QueueName="q0")["QueueUrl"]
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="forged")
    assert refused.value.response["Error"]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(sqs.exceptions.ClientError) as refused:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "x"}] * 2)
    assert refused.value.response["Error"]["Code"] == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"


def test_query_requests_are_verified_too(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("query-secret-0123456789")
    key = {"name": "q", "access_key_id": "AKIAQUERY0000000001", "secret_file": str(tmp_path / "secret"),
           "scopes": ["submit", "work"]}  # fmt: skip
    with sqs_service(tmp_path, f"sqlite:///{tmp_path / 'queue.sqlite3'}", api_keys=[key]) as keyed:
        good = query_client(tmp_path, keyed.endpoint, key["access_key_id"], "query-secret-0123456789")
        bad = query_client(tmp_path, keyed.endpoint, key["access_key_id"], "wrong")
        try:
            url = good.get_queue_url(QueueName="q0")["QueueUrl"]
            good.send_message(QueueUrl=url, MessageBody="signed form")
            with pytest.raises(bad.exceptions.ClientError) as refused:
                bad.send_message(QueueUrl=url, MessageBody="forged form")
            assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
            [message] = good.receive_message(QueueUrl=url, WaitTimeSeconds=2)["Messages"]
            assert message["Body"] == "signed form"
        finally:
            good.close()
            bad.close()
