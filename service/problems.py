"""Every error answer is ``application/problem+json`` (RFC 9457) with a stable ``code``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import PerfectQueueError, RequestError, UnsupportedMediaTypeError
from .models import Problem

log = logging.getLogger("perfectqueue.service")

MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 1
HTTP_CODES = {404: "unknown_endpoint", 405: "method_not_allowed", 400: "bad_request"}


PROBLEM = {
    "model": Problem,
    "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem responses an operation can give (every /v1 one needs a key;
    400 answers a body that is not JSON at all)."""
    return {status: PROBLEM for status in sorted({*statuses, 400, 401, 403, 413, 422, 503})}


def problem(
    status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": f"urn:perfectqueue:problem:{code}", "title": title, "status": status, "detail": detail}
    body["code"] = code
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = dict(headers or {})
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers or None)


def error_problem(exc: PerfectQueueError) -> JSONResponse:
    """The answer to a domain error (a server-side one is logged too)."""
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc)
    title = (type(exc).__doc__ or type(exc).__name__).strip().splitlines()[0]
    return problem(exc.status, exc.code, title, exc.public or title)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a problem response."""
    _document_problems_only(app)

    @app.exception_handler(PerfectQueueError)
    async def _domain(_request: Request, exc: PerfectQueueError) -> JSONResponse:
        return error_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refusal = unreadable(request, exc)
        if refusal is not None:
            return error_problem(refusal)
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return problem(422, "invalid", "A value in the request is not acceptable.", detail, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "bad_request")
        # keep Starlette's headers: a 405 must say which methods are Allowed (RFC 9110 §15.5.6)
        headers = dict(exc.headers or {})
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return problem(500, "internal", "Internal error.", "The service failed; the error is in its log.")


def unreadable(request: Request, exc: RequestValidationError) -> RequestError | None:
    """A body that could not be read as JSON at all: 400 ``bad_request`` if it is malformed JSON,
    415 ``unsupported_media_type`` if its Content-Type is not JSON (FastAPI then passes the body on
    as bytes). A body that is not UTF-8 was refused before routing (limits.py)."""
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "malformed")
            return RequestError(f"the body is not JSON: {reason} (at character {error['loc'][-1]})")
    if isinstance(exc.body, bytes):
        kind = request.headers.get("content-type", "")
        return UnsupportedMediaTypeError(f"the body is {kind[:100]!r}; send application/json")
    return None


def _document_problems_only(app: FastAPI) -> None:
    """FastAPI lists ``application/json`` beside ``application/problem+json`` for every error
    response with a model; errors are only ever problem+json, so the document says just that.
    Every operation that takes a body can answer 415 (see :func:`unreadable`): it says so too."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for path in generate()["paths"].values():
                for operation in path.values():
                    if "requestBody" in operation:
                        operation["responses"] = with_415(operation.get("responses", {}))
                    for status, response in operation.get("responses", {}).items():
                        if status[0] in "45" and MEDIA_TYPE in response.get("content", {}):
                            response["content"].pop("application/json", None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def with_415(responses: dict[str, Any]) -> dict[str, Any]:
    """``responses`` (an operation's, in the document) with the 415 problem, in status order."""
    schema = {"schema": {"$ref": "#/components/schemas/Problem"}}
    unsupported = {"description": HTTPStatus(415).phrase, "content": {MEDIA_TYPE: schema}}
    return dict(sorted({"415": unsupported, **responses}.items()))
