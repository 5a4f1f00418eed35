"""API keys: who is calling (an ASGI middleware) and what that key may do (a route dependency).

Keys are configured as hashes only (``sha256:<hex>`` of a high-entropy random key, as
``perfectqueue keygen`` prints them). A presented key is hashed and compared with every
configured hash by ``hmac.compare_digest``, all of them every time, so neither the comparison nor
the number of comparisons depends on how much of a hash matched. A key's ``name`` may be logged;
the key itself and its hash never are, and no error body repeats what the caller sent.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError, ForbiddenError, UnauthorizedError
from . import problems
from .apidocs import OPEN_PATHS as DOCS_PATHS
from .asgi import header
from .config import ApiKey, Scope_, Settings

log = logging.getLogger("perfectqueue.service")

KEY_PREFIX = "pq_"
OPEN_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/openapi.json", *DOCS_PATHS})
"""Paths that need no key: the health probes, the API's own description (it holds no data) and
``/``, which leads to the dashboard."""
OPEN_PREFIX = "/ui"
"""The dashboard's static pages (they hold no data; the API calls they make need a key)."""
IDENTITY = "perfectqueue.api_key"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key of the service (`perfectqueue keygen`), sent as `Authorization: Bearer <key>`. "
    "Needed on every endpoint but /livez and /readyz once the service has keys configured.",
)


def hash_key(key: str) -> str:
    """The settings form of a key: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new random key: 256 bits from the OS's CSPRNG."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def find_key(keys: list[ApiKey], presented: str) -> ApiKey | None:
    """The configured key whose hash is the presented key's, compared in constant time."""
    digest = hash_key(presented).encode("ascii")
    found = None
    for key in keys:
        if key.hash is not None and hmac.compare_digest(digest, key.hash.encode("ascii")):
            found = key
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without keys unless told ``insecure``; warn if told."""
    if settings.api_keys or is_loopback(settings.host):
        return
    if not settings.insecure:
        raise ConfigError(
            f"refusing to serve on {settings.host} without api_keys: configure api_keys "
            "(perfectqueue keygen), or pass --insecure (insecure: true) to serve without authentication"
        )
    log.warning(
        "serving on %s WITHOUT authentication (insecure): anyone who reaches it can submit, take and "
        "finish tasks",
        settings.host,
    )


class Authentication:
    """Pure ASGI: once keys are configured, every request but the open paths needs a valid key.

    The key found is put in the scope for :func:`require`; a request without one is answered 401
    before its body is read.
    """

    def __init__(self, app: ASGIApp, keys: list[ApiKey]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = find_key(self.keys, presented_key(scope) or "")
        if key is None:
            log.info("%s %s refused: no valid API key", scope["method"], scope["path"])
            await unauthorized()(scope, receive, send)
            return
        scope[IDENTITY] = key
        await self.app(scope, receive, send)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path == OPEN_PREFIX or path.startswith(OPEN_PREFIX + "/")


def presented_key(scope: Scope) -> str | None:
    given = header(scope, b"authorization")
    if given is None:
        return None
    scheme, _, token = given.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def unauthorized() -> Any:
    detail = "this endpoint needs an API key: send 'Authorization: Bearer <key>'"
    return problems.problem(401, "unauthorized", "No valid credentials.", detail)


class Require:
    """A route dependency: the caller's key has one of ``scopes`` (for the path's queue, if it
    names one). :mod:`.fastlane` asks :meth:`allows` the same question without FastAPI."""

    def __init__(self, scopes: tuple[Scope_, ...]) -> None:
        self.scopes = scopes

    def allows(self, settings: Settings, scope: Scope, queue: str | None) -> bool:
        if not settings.api_keys:
            return True
        key: ApiKey | None = scope.get(IDENTITY)
        return key is not None and any(key.allows(s, queue) for s in self.scopes)

    async def __call__(
        self, request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> None:
        settings = request.app.state.runtime.settings
        queue = request.path_params.get("queue")
        if self.allows(settings, request.scope, queue):
            return
        key: ApiKey | None = request.scope.get(IDENTITY)
        if key is None:  # the middleware answers first; this holds if it were ever left out
            raise UnauthorizedError("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
        scopes = self.scopes
        log.info("%s %s refused: key %r lacks scope %s", request.method, request.url.path, key.name, scopes)
        needed = " or ".join(repr(scope) for scope in scopes)
        where = f" on queue {queue!r}" if queue is not None and set(scopes) & set(key.scopes) else ""
        raise ForbiddenError(f"the API key {key.name!r} does not have the scope {needed}{where}")


def require(*scopes: Scope_) -> Any:
    """A route's dependency on one of ``scopes`` (see :class:`Require`)."""
    return Depends(Require(scopes))


def key_of(request: Request) -> ApiKey | None:
    key: ApiKey | None = request.scope.get(IDENTITY)
    return key
