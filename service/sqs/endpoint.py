"""The SQS endpoint: a pure ASGI layer answering every request under ``/sqs``.

It sits inside the request log (so SQS requests get a request id, an access line and their HTTP
metrics) and outside the bearer-key check and the native API: an SQS request is authenticated by
its Signature V4, not by a bearer key. The order of one request: the protocol (an
``X-Amz-Target`` header: JSON, else Query), the access key id (refused before the body is read),
the body (counted as it arrives, at most ``max_body_bytes``), the signature, then the action.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import TooLargeError
from ...logformat import log_context
from ..asgi import header
from ..config import ApiKey, Settings
from ..limits import declared_length, read_body
from ..runtime import Runtime
from . import protocol, sigv4
from .actions import dispatch
from .errors import SqsError, invalid
from .params import Context

log = logging.getLogger("perfectqueue.service")

PREFIX = "/sqs"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Template:
    """The route template the request log's metrics label SQS requests with."""

    path: str = PREFIX


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request as the endpoint reads it."""

    json: bool
    headers: dict[str, str]
    request_id: str


class SqsEndpoint:
    """Answers ``/sqs`` and ``/sqs/...`` in the SQS protocols; gives everything else to ``app``.

    With keys configured, a request must be signed by one with an ``access_key_id``; with none
    (loopback only), requests are served whatever credentials signed them, as the native API
    serves requests without a token.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime, settings: Settings) -> None:
        self.app, self.runtime, self.settings = app, runtime, settings
        self.keyed = bool(settings.api_keys)
        self.secrets: dict[str, tuple[ApiKey, str]] = {
            key.access_key_id: (key, key.secret() or "") for key in settings.api_keys if key.access_key_id
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        scope["route"] = Template()
        headers = headers_of(scope)
        incoming = Incoming("x-amz-target" in headers, headers, request_id())
        try:
            response = await self.answer(scope, receive, incoming)
        except SqsError as exc:
            if exc.status in (401, 403):  # the code only: never what the caller sent
                log.info("SQS request refused: %s", exc.code)
            response = error_response(exc, incoming)
        if response is not None:
            await response(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, incoming: Incoming) -> Response | None:
        if scope["method"] not in ("POST", "GET"):
            raise SqsError(
                "InvalidAction", "The SQS endpoint takes POST (or GET for the Query protocol).", 405
            )
        signed = sigv4.parse_authorization(incoming.headers.get("authorization")) if self.keyed else None
        key = self.key_of(signed)  # an unknown key is refused before the body is read
        body = await self.body(scope, receive)
        if body is None:
            return None  # the client is gone
        if signed is not None:
            self.verify(scope, incoming, signed, body)
        action, params = self.parse(scope, incoming, body)
        gone = Request(scope, receive).is_disconnected
        ctx = Context(self.runtime, key, endpoint_of(scope), region_of(incoming), gone)
        return success_response(incoming, action, await dispatch(ctx, action, params))

    def verify(self, scope: Scope, incoming: Incoming, signed: sigv4.Signed, body: bytes) -> None:
        secret = self.secrets[signed.access_key_id][1]
        request = sigv4.HttpRequest(scope["method"], raw_path(scope), query_of(scope), incoming.headers, body)
        sigv4.verify(secret, signed, request, time.time(), self.settings.sqs_clock_skew)

    def key_of(self, signed: sigv4.Signed | None) -> ApiKey | None:
        if signed is None:
            return None
        found = self.secrets.get(signed.access_key_id)
        if found is None:
            raise SqsError(
                "InvalidClientTokenId", "The security token included in the request is invalid.", 403
            )
        return found[0]

    async def body(self, scope: Scope, receive: Receive) -> bytes | None:
        limit = self.settings.max_body_bytes
        declared = declared_length(scope)
        try:
            if declared is not None and declared > limit:
                raise TooLargeError
            return await read_body(receive, limit)
        except TooLargeError:
            raise invalid(f"The request body is over the limit of {limit} bytes (max_body_bytes).") from None

    def parse(self, scope: Scope, incoming: Incoming, body: bytes) -> tuple[str, dict[str, object]]:
        if incoming.json:
            return protocol.json_action(incoming.headers["x-amz-target"]), protocol.json_params(body)
        form = query_of(scope) if scope["method"] == "GET" else body.decode("utf-8", "replace")
        action, params = protocol.query_params(form)
        queue = scope["path"][len(PREFIX) :].strip("/")
        if "QueueUrl" not in params and queue.count("/") == 1:  # a Query request sent to the queue's URL
            params["QueueUrl"] = endpoint_of(scope) + "/" + queue
        return action, params


def success_response(incoming: Incoming, action: str, result: dict[str, object]) -> Response:
    if incoming.json:
        return Response(
            protocol.json_answer(result), 200, media_type=protocol.JSON_MEDIA, headers=ids(incoming)
        )
    body = protocol.query_answer(action, result, incoming.request_id)
    return Response(body, 200, media_type="text/xml", headers=ids(incoming))


def error_response(error: SqsError, incoming: Incoming) -> Response:
    if incoming.json:
        body, extra = protocol.json_error(error)
        response = Response(body, error.status, media_type=protocol.JSON_MEDIA, headers=ids(incoming))
        response.raw_headers += extra
        return response
    return Response(
        protocol.query_error(error, incoming.request_id),
        error.status,
        media_type="text/xml",
        headers=ids(incoming),
    )


def request_id() -> str:
    """The request log's id of this request (so the SDK's RequestId is the access line's), or a new one."""
    fields = log_context.get() or {}
    given = fields.get("request_id")
    return given if isinstance(given, str) else uuid.uuid4().hex


def ids(incoming: Incoming) -> dict[str, str]:
    return {"x-amzn-RequestId": incoming.request_id}


def headers_of(scope: Scope) -> dict[str, str]:
    """Lower-case names; repeated headers joined by commas (as SigV4 canonicalises them)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])


def query_of(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return query.decode("latin-1")


def endpoint_of(scope: Scope) -> str:
    host = header(scope, b"host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{PREFIX}"


def region_of(incoming: Incoming) -> str:
    try:
        return sigv4.parse_authorization(incoming.headers.get("authorization")).region
    except SqsError:
        return DEFAULT_REGION
