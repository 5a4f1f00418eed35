"""The dashboard: its pages at ``/ui`` (plain HTML, CSS and JavaScript shipped in the package),
the two admin endpoints only it reads (:mod:`.api`), and the per-minute throughput it shows
(:mod:`.throughput`). :class:`~.state.Dashboard` is its state, held by the app.

The pages hold no data and need no key; every API call they make does (the ``admin`` scope).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

from ..asgi import PAGE_HEADERS
from ..metrics import PerMinute
from ..runtime import Runtime
from ..trouble import Trouble
from . import api
from .state import Dashboard

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
HEADERS = PAGE_HEADERS

pages = APIRouter(include_in_schema=False)


def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404)
    content = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(content, media_type=ASSETS[name], headers=HEADERS)


@pages.get("/")
@pages.get("/ui")
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@pages.get("/ui/")
async def ui_index() -> Response:
    return asset("index.html")


@pages.get("/ui/{name}")
async def ui_asset(name: str) -> Response:
    return asset(name)


def install(app: FastAPI, runtime: Runtime, counts: PerMinute, trouble: Trouble) -> Dashboard:
    """Serve the pages and the dashboard's endpoints; the app's lifespan runs its throughput."""
    dashboard = app.state.dashboard = Dashboard(runtime, counts, trouble)
    app.include_router(pages)
    app.include_router(api.router)
    return dashboard
