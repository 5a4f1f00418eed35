"""An SQS message as a task, and a task as an SQS message; the MD5 digests the SDKs check.

A message sent through SQS is stored as a task of type ``sqs`` (or the String message attribute
``perfectqueue.type``) whose data is ``{"body": <the body>}``, plus ``"attributes"``: the message
attributes as SQS gives them (``DataType`` and ``StringValue`` or a base64 ``BinaryValue``).
Stored as JSON text, the body round-trips byte for byte. A task whose data is of that shape is
delivered with that body and those attributes; any other task (a native submit) is delivered with
the body ``{"type": <type>, ...its data}``, the task's stored JSON document.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Mapping
from typing import Any

from ..store import Task
from ..store.codec import compact_json
from .errors import SqsError, invalid

TYPE = "sqs"
TYPE_ATTRIBUTE = "perfectqueue.type"
MAX_RUNNING_ATTRIBUTE = "perfectqueue.max_running"
MAX_ATTRIBUTES = 10
ATTRIBUTE_NAME = re.compile(r"(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}")
RESERVED = ("aws.", "amazon.")
BODY_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""What a body (and a String attribute's value) may not contain: SQS's allowed set's complement."""


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def body_md5(body: str) -> str:
    return md5(body.encode("utf-8"))


def attributes_md5(attributes: Mapping[str, Mapping[str, str]]) -> str:
    """MD5OfMessageAttributes as AWS computes it: for each attribute by name, the length-prefixed
    (4 bytes, big-endian) name and data type, a transport byte (1 string, 2 binary), the value."""
    parts: list[bytes] = []
    for name in sorted(attributes):
        value = attributes[name]
        data_type = value["DataType"]
        parts += [_prefixed(name.encode("utf-8")), _prefixed(data_type.encode("utf-8"))]
        if "BinaryValue" in value:
            parts += [b"\x02", _prefixed(base64.b64decode(value["BinaryValue"]))]
        else:
            parts += [b"\x01", _prefixed(value["StringValue"].encode("utf-8"))]
    return md5(b"".join(parts))


def _prefixed(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def check_body(body: object) -> str:
    if body is None:
        raise SqsError("MissingParameter", "The request must contain the parameter MessageBody.")
    if not isinstance(body, str) or not body:
        raise invalid("The message body must be a non-empty string.")
    if BODY_CHARS.search(body):
        raise SqsError("InvalidMessageContents", "Invalid characters found in the message body.")
    return body


def check_attributes(given: object) -> dict[str, dict[str, str]]:
    """Message attributes as they are stored: DataType and StringValue or BinaryValue (base64)."""
    if given is None:
        return {}
    if not isinstance(given, dict) or len(given) > MAX_ATTRIBUTES:
        raise invalid(f"A message may have at most {MAX_ATTRIBUTES} message attributes.")
    return {_attribute_name(name): _attribute_value(name, value) for name, value in given.items()}


def _attribute_name(name: str) -> str:
    if not ATTRIBUTE_NAME.fullmatch(name) or name.lower().startswith(RESERVED):
        raise SqsError("InvalidParameterValue", f"Message attribute name '{name}' is invalid.")
    return name


def _attribute_value(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
        raise invalid(f"The message attribute '{name}' must have a DataType.")
    data_type: str = value["DataType"]
    kind = data_type.split(".", 1)[0]
    if kind == "Binary":
        binary = value.get("BinaryValue")
        try:
            if not isinstance(binary, str) or not base64.b64decode(binary, validate=True):
                raise ValueError
        except (ValueError, binascii.Error):
            raise invalid(f"The message attribute '{name}' must have a BinaryValue.") from None
        return {"DataType": data_type, "BinaryValue": binary}
    text = value.get("StringValue")
    if kind not in ("String", "Number") or not isinstance(text, str) or not text or BODY_CHARS.search(text):
        raise invalid(
            f"The message attribute '{name}' must have a DataType of String, Number or Binary "
            "and a value of its type."
        )
    if kind == "Number" and not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        raise invalid(f"The message attribute '{name}' must be a number.")
    return {"DataType": data_type, "StringValue": text}


def task_data(body: str, attributes: Mapping[str, dict[str, str]]) -> dict[str, Any]:
    return {"body": body, "attributes": dict(attributes)} if attributes else {"body": body}


def type_and_limit(attributes: Mapping[str, Mapping[str, str]]) -> tuple[str, int | None]:
    """The task type and max_running that the message attributes ask for."""
    task_type = attributes.get(TYPE_ATTRIBUTE, {}).get("StringValue") or TYPE
    limit = attributes.get(MAX_RUNNING_ATTRIBUTE, {}).get("StringValue")
    try:
        return task_type, None if limit is None else int(limit)
    except ValueError:
        raise invalid(f"The message attribute '{MAX_RUNNING_ATTRIBUTE}' must be an integer.") from None


def as_message(task: Task) -> tuple[str, dict[str, dict[str, str]]]:
    """The body and message attributes a task is delivered with."""
    data = task.data
    if isinstance(data.get("body"), str) and set(data) <= {"body", "attributes"}:
        attributes = data.get("attributes")
        return data["body"], attributes if isinstance(attributes, dict) else {}
    return compact_json({"type": task.type, **data}), {}


def selected(attributes: Mapping[str, dict[str, str]], names: list[str]) -> dict[str, dict[str, str]]:
    """The attributes that ReceiveMessage's MessageAttributeNames ask for (All, .*, prefix.*)."""
    if not names:
        return {}
    if "All" in names or ".*" in names:
        return dict(attributes)
    prefixes = tuple(n[:-1] for n in names if n.endswith(".*"))
    return {k: v for k, v in attributes.items() if k in names or (prefixes and k.startswith(prefixes))}
