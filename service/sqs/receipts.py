"""Receipt handles: the queue, the task id and the lease of one receive, opaque to the caller.

A handle is ``base64url(JSON [queue, id, lease]) "." check``, where ``check`` is the first 16 hex
digits of the payload's SHA-256: a damaged or truncated handle is refused as invalid before any
store call. What makes a handle unforgeable is its lease: a random token (46 random bits) drawn by the
store at that receive, which every delete and visibility change must present (the store fences
on it, CONTRACT.md §3). A handle edited to name another task or lease finds no task held under
it, and is refused as invalid too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from .errors import receipt_invalid

PREFIX = "pq1."


def _check(payload: str) -> str:
    return hashlib.sha256(payload.encode("ascii")).hexdigest()[:16]


def encode(queue: str, task_id: str, lease: int) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([queue, task_id, lease]).encode("utf-8")).decode("ascii")
    return f"{PREFIX}{payload}.{_check(payload)}"


def decode(handle: object, queue: str) -> tuple[str, int]:
    """The task id and lease of a handle of ``queue``; ReceiptHandleIsInvalid otherwise."""
    if not isinstance(handle, str) or not handle.startswith(PREFIX):
        raise receipt_invalid()
    payload, _, check = handle[len(PREFIX) :].rpartition(".")
    if not payload or check != _check(payload):
        raise receipt_invalid()
    try:
        named, task_id, lease = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, TypeError, binascii.Error):
        raise receipt_invalid() from None
    if named != queue:
        raise receipt_invalid(": it was issued by another queue")
    if not isinstance(task_id, str) or isinstance(lease, bool) or not isinstance(lease, int) or lease < 1:
        raise receipt_invalid()
    return task_id, lease
