"""``python -m bench.one_lane serve ...``: ``perfectqueue`` with one flush at a time per kind.

For before/after comparisons (``python -m bench --variants coalesced,one-lane``): merged calls as
they were before ``coalesce.LANES``, one flush of each kind at a time per queue.
"""

from __future__ import annotations

from perfectqueue.cli import main
from perfectqueue.service import coalesce

if __name__ == "__main__":
    coalesce.LANES = 1
    raise SystemExit(main())
