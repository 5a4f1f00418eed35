"""Names derived from a table's name (its indexes, its PostgreSQL channel) that must fit a limit."""

from __future__ import annotations

import hashlib


def fitted(prefix: str, table: str, suffix: str, limit: int) -> str:
    """``prefix + table + suffix`` while it fits ``limit`` characters; past that, the table
    name's first 30 characters and a hash of the whole (still unique per table)."""
    name = prefix + table + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(table.encode("utf-8")).hexdigest()[:8]
    return f"{prefix}{table[:30]}_{digest}{suffix}"
