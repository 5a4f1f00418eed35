"""The ``data`` column: a JSON object holding the task's type, optionally gzip-compressed.

This is the original's format: ``{"type": "...", ...user data...}`` as compact UTF-8 JSON,
gzip-compressed when the submitter asked for it; a reader detects gzip by its magic bytes.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"

compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
"""Task data as it is stored: compact JSON text; ValueError for NaN or Infinity (built once: a
``json.dumps`` with options builds an encoder per call)."""


def encode_data(task_type: str, data: dict[str, Any], compression: str | None) -> bytes:
    """The stored bytes for a task's type and data."""
    encoded = compact_json({**data, "type": task_type}).encode("utf-8")
    if compression == "gzip":
        return gzip.compress(encoded, mtime=0)
    return encoded


def decode_data(task_id: str, stored: bytes | str | None) -> tuple[str, dict[str, Any], str | None]:
    """(type, data, compression) from stored bytes, as the original reads them.

    Unreadable JSON reads as empty data (as the original does); a missing type falls back to
    the part of the id before its first dot.
    """
    compression = None
    blob = stored.encode("utf-8") if isinstance(stored, str) else (stored or b"")
    if blob[:2] == GZIP_MAGIC:
        compression = "gzip"
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError):
            blob = b""
    try:
        parsed = json.loads(blob) if blob else {}
    except ValueError:
        parsed = {}
    data = parsed if isinstance(parsed, dict) else {}
    task_type = data.pop("type", None)
    if not isinstance(task_type, str) or not task_type:
        task_type = task_id.split(".", 1)[0]
    return task_type, data, compression
