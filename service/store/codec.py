"""The ``data`` column: a JSON object holding the task's type, optionally gzip-compressed.

This is the original's format: ``{"type": "...", ...user data...}`` as compact UTF-8 JSON,
gzip-compressed when the submitter asked for it; a reader detects gzip by its magic bytes.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any, NamedTuple

GZIP_MAGIC = b"\x1f\x8b"
HUGE = 2**62  # no limit
TYPE_ROOM = 1024
"""What the stored JSON may hold beyond the data: the ``type`` key and a type of 255 bytes,
escaped (data of ``max_data_bytes`` submitted here is always read back)."""

compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
"""Task data as it is stored: compact JSON text; ValueError for NaN or Infinity (built once: a
``json.dumps`` with options builds an encoder per call)."""


def encode_data(task_type: str, data: dict[str, Any], compression: str | None) -> bytes:
    """The stored bytes for a task's type and data."""
    encoded = compact_json({**data, "type": task_type}).encode("utf-8")
    if compression == "gzip":
        return gzip.compress(encoded, mtime=0)
    return encoded


class Decoded(NamedTuple):
    type: str
    data: dict[str, Any] | None
    """None: over the limit, not read."""
    compression: str | None
    size: int
    """Bytes of the stored JSON (inflated), or the limit it passed."""


def decode_data(task_id: str, stored: bytes | str | None, limit: int | None = None) -> Decoded:
    """The type, data and compression from stored bytes, as the original reads them.

    Unreadable JSON reads as empty data (as the original does); a missing type falls back to
    the part of the id before its first dot. Data over ``limit`` bytes (once inflated: gzip is
    inflated only that far; the stored type aside) is not read: its data is None, its type
    the fallback. Without a limit, everything is read.
    """
    compression = None
    limit = HUGE if limit is None else limit + TYPE_ROOM
    raw = stored.encode("utf-8") if isinstance(stored, str) else (stored or b"")
    blob: bytes | None = raw
    if raw[:2] == GZIP_MAGIC:
        compression = "gzip"
        blob = inflate(raw, limit)
    if blob is None or len(blob) > limit:
        return Decoded(task_id.split(".", 1)[0], None, compression, limit)
    try:
        parsed = json.loads(blob) if blob else {}
    except ValueError:
        parsed = {}
    data = parsed if isinstance(parsed, dict) else {}
    task_type = data.pop("type", None)
    if not isinstance(task_type, str) or not task_type:
        task_type = task_id.split(".", 1)[0]
    return Decoded(task_type, data, compression, len(blob))


def inflate(blob: bytes, limit: int) -> bytes | None:
    """The gzip stream (one member or several) inflated; None once it passes ``limit`` bytes (the
    work stops there: a small row may inflate to gigabytes); b"" when it is not valid gzip."""
    parts: list[bytes] = []
    size = 0
    while blob[:2] == GZIP_MAGIC:
        member = zlib.decompressobj(wbits=31)
        try:
            part = member.decompress(blob, limit - size + 1)
        except zlib.error:
            return b""
        size += len(part)
        if size > limit:
            return None
        if not member.eof:
            return b""  # truncated
        parts.append(part)
        blob = member.unused_data
    return b"".join(parts)
