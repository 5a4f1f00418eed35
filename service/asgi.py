"""What the service's ASGI layers read of a request's scope, and the headers of its pages."""

from __future__ import annotations

from starlette.types import Scope

PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
"""The headers of the pages the service serves (the dashboard, the API's docs): nothing but the
service's own scripts and styles, no framing, no referrer."""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header ``name`` (lower-case, as ASGI gives names), or None."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None
