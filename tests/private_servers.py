"""A database server of the test's own, to kill and restart: MariaDB or PostgreSQL.

A test module imports ``private_db`` together with the two fixtures it draws on (``mariadb`` and
``postgres``); a test taking ``private_db`` runs once on each server.
"""

from __future__ import annotations

import pytest
from mariadb_instance import MariaDB, mariadb
from postgres_instance import PostgreSQL, postgres

__all__ = ["PrivateServer", "mariadb", "postgres", "private_db"]

PrivateServer = MariaDB | PostgreSQL


@pytest.fixture(params=["mariadb", "postgres"])
def private_db(request: pytest.FixtureRequest) -> PrivateServer:
    server: PrivateServer = request.getfixturevalue(request.param)
    return server
