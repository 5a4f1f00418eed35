"""The API's documentation at ``/docs``: Swagger UI from files shipped in a pinned package
(``swagger-ui-bundle-v2``), never from a CDN, under the dashboard's Content-Security-Policy.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, unpinned and without an integrity hash, on
the origin of ``/ui``, whose admin key sits in the page's sessionStorage: whoever served that
script could read it. It also renders blank without internet. Here the page, its script and its
style all come from this service (``script-src 'self'``), and ``api_docs: false`` turns ``/docs``
off. ``/redoc`` is not served.
"""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import Response
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from .asgi import PAGE_HEADERS as HEADERS

VENDORED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>PerfectQueue API</title>
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""
START = b"""window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
"""
OPEN_PATHS = frozenset({"/docs", *(f"/docs/{name}" for name in (*VENDORED, "start.js"))})
"""What the authentication lets through without a key (the page holds no data)."""

router = APIRouter(include_in_schema=False)


@cache
def vendored(name: str) -> bytes:
    return bytes(swagger_ui_path.joinpath(name).read_bytes())


@router.get("/docs")
async def page() -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/docs/start.js")
async def start() -> Response:
    return Response(START, media_type="text/javascript; charset=utf-8", headers=HEADERS)


@router.get("/docs/{name}")
async def asset(name: str) -> Response:
    if name not in VENDORED:
        raise HTTPException(404)
    return Response(vendored(name), media_type=VENDORED[name], headers=HEADERS)


def install(app: FastAPI) -> None:
    app.include_router(router)
