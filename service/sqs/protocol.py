"""The two wire protocols of SQS: AWS JSON 1.0 and Query (form-encoded in, XML out).

Both are read into one shape — the JSON protocol's members, e.g. ``{"QueueUrl": ...,
"Entries": [{"Id": ..., "MessageAttributes": {name: {"DataType": ..., "StringValue": ...}}}]}`` —
so that each action has one handler, and each handler's result (of the same shape) is written
back in the protocol the request came in.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from .errors import SqsError

JSON_MEDIA = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"

# The Query protocol's element names of the lists and maps, and the JSON protocol's members.
LISTS = {
    "AttributeName": "AttributeNames",
    "MessageAttributeName": "MessageAttributeNames",
    "MessageSystemAttributeName": "MessageSystemAttributeNames",
    "SendMessageBatchRequestEntry": "Entries",
    "DeleteMessageBatchRequestEntry": "Entries",
    "ChangeMessageVisibilityBatchRequestEntry": "Entries",
}
MAPS = {"Attribute": "Attributes", "MessageAttribute": "MessageAttributes", "Tag": "tags"}
RESULT_LISTS = {"QueueUrls": "QueueUrl", "Messages": "Message", "Failed": "BatchResultErrorEntry"}
MAX_DEPTH = 8
"""The most parts a Query parameter's name may have (SQS's deepest,
``SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue``, has 6)."""
NO_RESULT = frozenset({"DeleteMessage", "ChangeMessageVisibility", "PurgeQueue"})
"""The actions whose Query answer has no ``<ActionResult>`` element (every other one has, if empty)."""
RESULT_MAPS = {"Attributes": "Attribute", "MessageAttributes": "MessageAttribute"}


# -- JSON ---------------------------------------------------------------------------------------


def json_action(target: str) -> str:
    if not target.startswith(TARGET_PREFIX):
        raise SqsError("InvalidAction", "X-Amz-Target must name an action of AmazonSQS.")
    return target[len(TARGET_PREFIX) :]


def json_params(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise SqsError("InvalidParameterValue", "The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise SqsError("InvalidParameterValue", "The request body must be a JSON object.")
    return params


def json_answer(result: dict[str, Any]) -> bytes:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_error(error: SqsError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json_answer({"__type": f"com.amazonaws.sqs#{error.code}", "message": error.message})
    return body, [(b"x-amzn-query-error", f"{error.legacy_code};{error.fault}".encode())]


# -- Query --------------------------------------------------------------------------------------


def query_params(form: str) -> tuple[str, dict[str, Any]]:
    """The action and its parameters, from ``Action=...&QueueUrl=...&Entry.1.Id=...``."""
    tree: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(form, keep_blank_values=True):
        node = tree
        *parents, leaf = key.split(".", MAX_DEPTH)
        if len(parents) >= MAX_DEPTH:  # deeper than any SQS parameter: refused, never recursed into
            raise SqsError("InvalidParameterValue", "A parameter name has too many parts.")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(leaf, value)
    action = tree.pop("Action", None)
    if not isinstance(action, str) or not action:
        raise SqsError("MissingAction", "The request must contain the parameter Action.")
    tree.pop("Version", None)
    return action, _members(tree)


def _members(tree: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in tree.items():
        if key in LISTS and isinstance(value, dict):
            params[LISTS[key]] = [_value(v) for _, v in sorted(value.items(), key=_index)]
        elif key in MAPS and isinstance(value, dict):
            params[MAPS[key]] = {
                e.get("Name"): _value(e.get("Value"))
                for _, e in sorted(value.items(), key=_index)
                if isinstance(e, dict) and isinstance(e.get("Name"), str)
            }
        else:
            params[key] = _value(value)
    return params


def _value(value: Any) -> Any:
    return _members(value) if isinstance(value, dict) else value


def _index(item: tuple[str, Any]) -> int:
    return int(item[0]) if item[0].isdigit() else 0


def query_answer(action: str, result: dict[str, Any], request_id: str) -> bytes:
    inner = "" if action in NO_RESULT else f"<{action}Result>{_elements(result, action)}</{action}Result>"
    metadata = f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
    return _document(f'<{action}Response xmlns="{NAMESPACE}">{inner}{metadata}</{action}Response>')


def query_error(error: SqsError, request_id: str) -> bytes:
    detail = (
        f"<Error><Type>{error.fault}</Type><Code>{escape(error.legacy_code)}</Code>"
        f"<Message>{escape(error.message)}</Message><Detail/></Error>"
    )
    return _document(
        f'<ErrorResponse xmlns="{NAMESPACE}">{detail}<RequestId>{request_id}</RequestId></ErrorResponse>'
    )


def _document(xml: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + xml).encode("utf-8")


def _elements(result: dict[str, Any], action: str) -> str:
    out: list[str] = []
    for name, value in result.items():
        if name in RESULT_MAPS and isinstance(value, dict):
            element = RESULT_MAPS[name]
            out += [
                f"<{element}><Name>{escape(k)}</Name>{_element('Value', v, action)}</{element}>"
                for k, v in value.items()
            ]
        elif isinstance(value, list):
            element = f"{action}ResultEntry" if name == "Successful" else RESULT_LISTS.get(name, name)
            out += [_element(element, item, action) for item in value]
        else:
            out.append(_element(name, value, action))
    return "".join(out)


def _element(name: str, value: Any, action: str) -> str:
    if isinstance(value, dict):
        return f"<{name}>{_elements(value, action)}</{name}>"
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"


def escape(text: str) -> str:
    """XML text that parses back to exactly ``text`` (a CR is escaped: parsers turn a bare one into LF)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")
