"""Size limits: the request body (counted as it arrives, before anything parses it) and task data;
and what a body must be to be read as JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidError, RequestError, TooLargeError
from . import problems
from .asgi import header
from .store.codec import compact_json


class BodyLimit:
    """Pure ASGI: a request body over ``limit`` bytes is answered 413 ``too_large`` unread.

    A declared Content-Length over the limit is refused at once; otherwise the body is read here,
    counting bytes as they arrive (a chunked body has no Content-Length), and replayed to the app,
    so that nothing downstream ever parses a body over the limit.

    Both paths to an operation (the short path and FastAPI) meet here, so the body's one rule of
    encoding is kept here too: see :func:`json_body`.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.limit:
            await self.too_large()(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.limit)
        except TooLargeError:
            await self.too_large()(scope, receive, send)
            return
        if body is None:  # the client is gone
            return
        refusal = json_body(scope, body)
        if refusal is not None:
            await problems.error_problem(refusal)(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)

    def too_large(self) -> Any:
        detail = f"the request body is over the limit of {self.limit} bytes (max_body_bytes)"
        return problems.problem(413, "too_large", "The request or a part of it is over a size limit.", detail)


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, its bytes counted as they arrive: TooLargeError past ``limit``, None
    if the client left first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLargeError(f"the request body is over the limit of {limit} bytes (max_body_bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_body(scope: Scope, body: bytes) -> RequestError | None:
    """A body without a Content-Type is JSON (it is given ``application/json``, so that FastAPI
    reads it as the short path does); a JSON body must be UTF-8 (RFC 8259 §8.1), where Python's
    ``json`` would read UTF-16 and UTF-32 too. The refusal (400 ``bad_request``), or None."""
    if not body:
        return None
    kind = header(scope, b"content-type")
    if kind is None:
        scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
    elif not is_json_media(kind):
        return None  # not JSON at all: the operation answers 415 (see problems.py)
    encoding = json.detect_encoding(body)  # as json.loads reads it: UTF-16 and -32 need no BOM
    if not encoding.startswith("utf-8"):
        return RequestError(f"the body is {encoding.upper()}, not UTF-8: JSON is sent as UTF-8")
    return None  # bytes that are not UTF-8: json.loads refuses them, a 400 on both paths


def is_json_media(content_type: str) -> bool:
    """FastAPI's rule: ``application/json`` or ``application/<anything>+json``, any parameters."""
    main, _, sub = content_type.partition(";")[0].strip().lower().partition("/")
    return main == "application" and "/" not in sub and (sub == "json" or sub.endswith("+json"))


def declared_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then what the client sends next (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


MAX_DEPTH = 64
"""How deeply task data may nest (objects and arrays): deeper data could be stored but not read back."""


def check_data_size(data: dict[str, Any] | None, limit: int, what: str = "data") -> None:
    """Task data must nest at most MAX_DEPTH deep (422) and encode (as it is stored: compact UTF-8
    JSON) in at most ``limit`` bytes (413)."""
    if not data:
        return
    if depth(data) > MAX_DEPTH:
        raise InvalidError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        size = len(compact_json(data).encode("utf-8", "surrogatepass"))
    except (ValueError, TypeError, RecursionError):
        return  # not storable at all: the store's own check says why (422)
    if size > limit:
        raise TooLargeError(f"{what} is {size} bytes, over the limit of {limit} bytes (max_data_bytes)")


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
