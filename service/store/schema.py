"""The ``rdb_compat`` table: its columns (the original's, then ours), its indexes, and ``init``.

The first seven columns are exactly those of the Ruby PerfectQueue's ``rdb_compat`` backend.
This implementation adds columns, each nullable or with a default, which the original neither
reads nor writes: ``attempts``, ``max_attempts``, ``last_error``, ``outcome`` (how a finished row
ended: NULL normally, ``dead`` or ``cancelled``), ``cancel_requested`` and ``traceparent``. It adds
two indexes: ``index_<table>_on_resource`` on (resource, timeout), so that fair acquisition costs
what the number of users costs and not what the backlog does, and ``index_<table>_on_outcome``,
so that dead tasks are counted without reading every finished row. ``init`` adds whatever of
these a table lacks (a table the original created, or one of an earlier version).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ...errors import ConfigError, UnavailableError
from .database import Database
from .model import LAST_ERROR_CHARS
from .names import fitted

TABLE_NAME = re.compile(r"[A-Za-z0-9_$-]{1,64}")
"""Table names: 1 to 64 letters, digits, ``_``, ``$`` or ``-``, a digit first or not (``pq-tasks``,
``9queue``): every name MySQL takes quoted that the original's SQL (which quotes it with
backticks and puts it in a string for ``GET_LOCK``) can use, and nothing that could end a quote.
PostgreSQL's identifiers hold 63 bytes: a longer name is refused there (:func:`build_table`)."""
MAX_IDENTIFIER = 64  # MySQL's, for index names too
POSTGRES_MAX_IDENTIFIER = 63


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise ConfigError(f"invalid table name {name!r}: use 1 to 64 letters, digits, '_', '$' or '-'")
    return name


def index_name(table: str, suffix: str) -> str:
    """``index_<table>_on_<suffix>``, the original's naming, while it fits MySQL's 64 characters;
    for a longer table name, its first 30 characters and a hash of the whole name."""
    return fitted("index_", table, f"_on_{suffix}", MAX_IDENTIFIER)


def timeout_index(name: str) -> str:
    return index_name(name, "timeout")


def resource_index(name: str) -> str:
    return index_name(name, "resource")


def outcome_index(name: str) -> str:
    return index_name(name, "outcome")


EXTENSION_DEFAULTS: dict[str, int | None] = {
    "attempts": 0,
    "max_attempts": None,
    "last_error": None,
    "outcome": None,
    "cancel_requested": 0,
    "traceparent": None,
}
"""The columns beyond the original's, with the value a row of a table without them has."""


def has_extensions(db: Database, table: sa.Table) -> bool:
    """Does the table have every column beyond the original's? True when that cannot be told
    (the table is missing, the database is out of reach): only a table seen without them is
    served without them."""
    try:
        with db.connect(readonly=True) as conn:  # SQLite: no write lock for a look
            names = {col["name"] for col in sa.inspect(conn).get_columns(table.name)}
    except SQLAlchemyError:
        return True
    return all(name in names for name in EXTENSION_DEFAULTS)


def build_table(name: str, db: Database) -> sa.Table:
    """The table's SQLAlchemy description (for statements; :func:`init_table` creates it)."""
    check_table_name(name)
    if db.is_postgres and len(name.encode("utf-8")) > POSTGRES_MAX_IDENTIFIER:
        raise ConfigError(f"invalid table name {name!r}: PostgreSQL's names hold at most 63 bytes")
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.String(255), primary_key=True),  # init_table sets its collation
        sa.Column("timeout", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql"), nullable=False),
        sa.Column("created_at", sa.Integer, nullable=True),
        sa.Column("resource", sa.String(255), nullable=True),  # init_table sets its collation
        sa.Column("max_running", sa.Integer, nullable=True),
        sa.Column(
            "owner",
            sa.BigInteger().with_variant(mysql.BIGINT(unsigned=True), "mysql"),
            nullable=False,
            server_default="0",
        ),
        # Beyond the original: added by init to an existing table, ignored by Ruby processes.
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=True),
        sa.Column(
            "last_error",
            sa.String(LAST_ERROR_CHARS).with_variant(
                mysql.VARCHAR(LAST_ERROR_CHARS, charset="utf8mb4", collation="utf8mb4_bin"), "mysql"
            ),
            nullable=True,
        ),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("cancel_requested", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("traceparent", sa.String(55), nullable=True),
        sa.Index(timeout_index(name), "timeout"),
        sa.Index(resource_index(name), "resource", "timeout"),
        sa.Index(outcome_index(name), "outcome"),
        mysql_charset="utf8mb4",
    )


def init_table(
    db: Database,
    table: sa.Table,
    side: Callable[[Connection], None] | None = None,
    binary_collation: bool = False,
) -> list[str]:
    """Create the table, or add what an existing one lacks; safe to run again and concurrently.
    ``side`` creates a side table, in the same turn (not reported). ``binary_collation``: also
    convert the ``id`` and ``resource`` columns of an existing MySQL table to the binary
    collation new tables get (see :func:`convert_collation`).

    Returns what it did, for the command line to print.
    """
    try:
        with db.init_lock():
            done = _init_table(db, table)
            if binary_collation:
                done += convert_collation(db, table)
            if side is not None:
                with db.engine.begin() as conn:
                    side(conn)
            return done
    except OperationalError as exc:  # the server is out of reach, or refused us
        raise UnavailableError(f"cannot initialise table {table.name}", str(exc.orig)) from exc
    except DBAPIError as exc:
        raise ConfigError(f"cannot initialise table {table.name}: {exc.orig}") from exc


def _init_table(db: Database, table: sa.Table) -> list[str]:
    done: list[str] = []
    if not db.is_sqlite:  # asked here, not in build_table: a store is built before its database answers
        collation = _binary_collation(db)
        for column in (table.c.id, table.c.resource):
            if isinstance(column.type, sa.String):
                column.type.collation = collation
    with db.unbounded() as conn:
        if not sa.inspect(conn).has_table(table.name):
            done.append(f"created table {table.name}")
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
    with db.engine.connect() as conn:
        columns = {col["name"] for col in sa.inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name not in columns:
            _add_column(db, table, column)
            done.append(f"added column {column.name}")
    with db.engine.connect() as conn:
        existing = {ix["name"] for ix in sa.inspect(conn).get_indexes(table.name)}
    for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
        if index.name not in existing:
            _create_index(db, index)
            done.append(f"created index {index.name}")
    return done


def _add_column(db: Database, table: sa.Table, column: sa.Column[object]) -> None:
    """``ALTER TABLE ... ADD COLUMN``: every added column is nullable or has a default, so the
    rows in place (and Ruby processes inserting without it) stay valid. MariaDB adds a column at
    the end of a table in place (instantly), without copying it."""
    with db.engine.connect() as conn:
        ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        quoted = conn.dialect.identifier_preparer.format_table(table)
    try:
        with db.unbounded() as conn:
            conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {ddl}")
    except DBAPIError as exc:
        if "duplicate column" in str(exc.orig).lower() or "already exists" in str(exc.orig):
            return  # another process added it first
        raise


def _create_index(db: Database, index: sa.Index) -> None:
    try:
        with db.unbounded() as conn:
            index.create(conn)
    except DBAPIError as exc:
        if "already exists" in str(exc.orig) or "Duplicate key name" in str(exc.orig):
            return  # another process created it first
        raise


def convert_collation(db: Database, table: sa.Table) -> list[str]:
    """An opt-in for a MySQL table the original created: ``id`` and ``resource`` compared byte for
    byte (``R7.2`` and ``r7.2``, ``acme`` and ``acme ``, become different ids and users), as in
    tables this project creates. The table is rebuilt (a copy: minutes on a large table, writes
    wait meanwhile); Ruby processes keep working on it. Nothing to do on SQLite and PostgreSQL."""
    if not db.is_mysql:
        return []
    collation = _binary_collation(db)
    with db.engine.connect() as conn:
        quoted = conn.dialect.identifier_preparer.format_table(table)
        current = {
            row[0]: row[1]
            for row in conn.exec_driver_sql(
                "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME IN ('id', 'resource')",
                (table.name,),
            )
        }
    if all(value == collation for value in current.values()):
        return []
    with db.unbounded() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE {quoted} "
            f"MODIFY id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {collation} NOT NULL, "
            f"MODIFY resource VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {collation} NULL"
        )
    return [f"converted id and resource to {collation}"]


def _binary_collation(db: Database) -> str:
    """Ids compare byte for byte, trailing spaces included, in tables this project creates."""
    if db.is_postgres:
        return "C"
    with db.engine.connect() as conn:
        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    return "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
