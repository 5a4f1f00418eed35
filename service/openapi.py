"""The OpenAPI document, generated from the app (committed as openapi/openapi.json)."""

from __future__ import annotations

from typing import Any

from .app import create_app
from .config import Settings


def document() -> dict[str, Any]:
    """The document of an app with default settings (settings do not change the API)."""
    return create_app(Settings()).openapi()
