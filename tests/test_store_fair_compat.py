"""Fair acquisition, tables created by the original Ruby PerfectQueue, and the query plans."""

from __future__ import annotations

import contextlib
import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import drop_table, require_mysql, set_timeout

from perfectqueue.errors import AlreadyExistsError
from perfectqueue.service.store import Database, NewTask, QueueStore, TaskStatus, acquire, fair
from perfectqueue.service.store.acquire import _json_plan
from perfectqueue.service.store.database import server_at_least
from perfectqueue.service.store.fair import Head
from perfectqueue.service.store.model import DELETE_OFFSET


@pytest.fixture(params=["table", "user"])
def store(database: Database, table_name: str, request: pytest.FixtureRequest) -> QueueStore:
    """A fresh, initialised queue table on each backend, fair, under each of fair scheduling's
    locks (``fair_lock``; SQLite takes neither, its writers being one at a time anyway)."""
    queue = QueueStore(database, table_name, fair_lock=request.param)
    queue.init()
    return queue


def db_now(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(db.now())).scalar_one())


def users_of(acquired: list[Any]) -> Counter[str | None]:
    return Counter(a.task.user for a in acquired)


# -- fair acquisition on both backends -------------------------------------------------------


def test_max_running_is_never_exceeded_even_within_one_acquire(store: QueueStore) -> None:
    store.submit_many([NewTask(f"a{i}", "x", user="A", max_running=2) for i in range(10)])
    store.submit_many([NewTask(f"b{i}", "x", user="B", max_running=5) for i in range(3)])
    store.submit_many([NewTask(f"n{i}", "x", max_running=1) for i in range(4)])
    first = store.acquire(50, 600)
    assert users_of(first) == {"A": 2, "B": 3, None: 4}
    assert len({a.task.id for a in first}) == len(first)
    assert store.acquire(50, 600) == []  # A is at its limit; 8 of A still wait
    assert store.counts().waiting == 8
    a_task = next(a for a in first if a.task.user == "A")
    store.finish(a_task.task.id, a_task.lease)
    second = store.acquire(50, 600)
    assert users_of(second) == {"A": 1}
    expire_one = second[0].task.id
    # a dead worker's lease frees its slot (expired before the others were submitted: oldest)
    set_timeout(store, expire_one, db_now(store.db) - 100)
    assert [a.task.id for a in store.acquire(50, 600)] == [expire_one]


def test_running_tasks_leased_elsewhere_count_against_the_limit(store: QueueStore) -> None:
    store.submit_many([NewTask(f"a{i}", "x", user="A", max_running=3) for i in range(5)])
    unfair = QueueStore(store.db, store.table.name, fair=False)
    assert len(unfair.acquire(2, 600)) == 2
    assert users_of(store.acquire(50, 600)) == {"A": 1}
    assert store.acquire(50, 600) == []


def test_higher_max_running_per_running_goes_first(store: QueueStore) -> None:
    now = db_now(store.db)
    for i in range(6):
        store.submit(NewTask(f"a{i}", "x", user="A", max_running=5))
        set_timeout(store, f"a{i}", now - 10 + i)
    for i in range(3):  # B's tasks are older: only the weights put A first
        store.submit(NewTask(f"b{i}", "x", user="B", max_running=2))
        set_timeout(store, f"b{i}", now - 100 + i)
    order = []
    for _ in range(8):
        got = store.acquire(1, 600)
        order.append(got[0].task.user if got else None)
    # A 5/1, 5/2 > B 2/1; A 5/3 < B 2; A 5/3 > B 2/2; A 5/4 > 1; A 5/5 = B 2/2: older head (B); A.
    assert order == ["A", "A", "B", "A", "A", "B", "A", None]
    assert store.get("a5").status is TaskStatus.WAITING and store.get("b2").status is TaskStatus.WAITING


def test_a_head_that_moves_is_weighed_by_its_new_rows_max_running(store: QueueStore) -> None:
    """Acquisitions remember each head's max_running while the head stays put; once A's head
    moves to a row with another max_running, that row's is what weighs and caps A."""
    now = db_now(store.db)
    store.submit(NewTask("a-first", "x", user="A", max_running=1))
    set_timeout(store, "a-first", now - 100)
    for i in range(5):
        store.submit(NewTask(f"a{i}", "x", user="A", max_running=5))
        set_timeout(store, f"a{i}", now - 50)
    for i in range(3):
        store.submit(NewTask(f"b{i}", "x", user="B", max_running=1))
        set_timeout(store, f"b{i}", now - 90 + i)
    [first] = store.acquire(1, 600)
    assert first.task.id == "a-first"  # weights 1/1 and 1/1: the older head
    store.finish(first.task.id, first.lease)
    # A's head is now a row with max_running 5: A 5/1 first, up to 5 of A; then B once
    assert users_of(store.acquire(6, 600)) == {"A": 5, "B": 1}


def test_one_acquire_follows_the_weights(store: QueueStore) -> None:
    store.submit_many([NewTask(f"a{i}", "x", user="A", max_running=5) for i in range(6)])
    store.submit_many([NewTask(f"b{i}", "x", user="B", max_running=2) for i in range(3)])
    assert users_of(store.acquire(3, 600)) == {"A": 2, "B": 1}


def test_tasks_without_user_are_not_limited(store: QueueStore) -> None:
    store.submit_many([NewTask(f"n{i}", "x", max_running=1) for i in range(12)])
    store.submit_many([NewTask(f"a{i}", "x", user="A", max_running=1) for i in range(3)])
    assert users_of(store.acquire(50, 600)) == {None: 12, "A": 1}


def test_each_acquisition_reads_the_rows_of_its_own_users(store: QueueStore) -> None:
    """The statement reading the planned users' rows is kept per count of users: later
    acquisitions planning as many other users (or tasks without a user, at another place) read
    their own users' rows."""
    for user in "ABCD":
        store.submit_many([NewTask(f"{user}{i}", "x", user=user, max_running=1) for i in range(2)])
    assert users_of(store.acquire(2, 600)) == {"A": 1, "B": 1}
    assert users_of(store.acquire(2, 600)) == {"C": 1, "D": 1}
    store.submit(NewTask("n0", "x"))
    store.submit(NewTask("E0", "x", user="E", max_running=1))
    set_timeout(store, "n0", db_now(store.db) - 100)  # the older head: planned first
    assert users_of(store.acquire(2, 600)) == {None: 1, "E": 1}
    store.submit(NewTask("n1", "x"))
    store.submit(NewTask("F0", "x", user="F", max_running=1))
    set_timeout(store, "F0", db_now(store.db) - 100)
    assert users_of(store.acquire(2, 600)) == {"F": 1, None: 1}
    store.submit(NewTask("n2", "x"))  # tasks without a user beside more users than before
    store.submit_many([NewTask(f"{user}0", "x", user=user, max_running=1) for user in "GH"])
    assert users_of(store.acquire(3, 600)) == {None: 1, "G": 1, "H": 1}
    assert store.acquire(10, 600) == []  # A to H at their limit; no other task waits


def test_the_heads_remembered_are_only_those_still_waiting(store: QueueStore) -> None:
    """The max_running remembered per head (MariaDB) is forgotten once the head is gone: a
    drained queue leaves nothing behind, however many rows the acquisitions read."""
    for user in "ABC":
        store.submit_many([NewTask(f"{user}{i}", "x", user=user, max_running=10) for i in range(4)])
    taken = []
    while got := store.acquire(2, 600):
        taken += got
    assert len(taken) == 12
    assert store._acquisition._head_limits == {}


def test_fair_false_ignores_users_and_takes_the_oldest(store: QueueStore) -> None:
    unfair = QueueStore(store.db, store.table.name, fair=False)
    now = db_now(store.db)
    ages = {"t0": 30, "t1": 10, "t2": 50, "t3": 0, "t4": 40, "t5": 20}
    for i, (task_id, age) in enumerate(ages.items()):
        store.submit(NewTask(task_id, "x", user="A" if i % 2 else "B", max_running=1))
        set_timeout(store, task_id, now - 100 + age)
    oldest = ["t3", "t1", "t5", "t0", "t4", "t2"]  # the first three are all A's
    assert [a.task.id for a in unfair.acquire(3, 600)] == oldest[:3]
    assert [a.task.id for a in unfair.acquire(10, 600)] == oldest[3:]


# -- fair.plan: the pure planner -------------------------------------------------------------


def test_plan_takes_nothing_from_nothing() -> None:
    assert fair.plan([], {}, 10, {}) == {}
    assert fair.plan([Head("A", 100, 2)], {}, 0, {}) == {}


def test_plan_respects_max_running_and_running_counts() -> None:
    assert fair.plan([Head("A", 100, 2)], {}, 10, {}) == {"A": 2}
    assert fair.plan([Head("A", 100, 3)], {"A": 2}, 10, {}) == {"A": 1}
    assert fair.plan([Head("A", 100, 3)], {"A": 3}, 10, {}) == {}
    assert fair.plan([Head("A", 100, 3)], {"A": 7}, 10, {}) == {}


def test_plan_orders_by_weight_then_oldest_head() -> None:
    heads = [Head("A", 200, 5), Head("B", 100, 2)]
    assert fair.plan(heads, {}, 1, {}) == {"A": 1}
    assert fair.plan(heads, {}, 3, {}) == {"A": 2, "B": 1}
    assert fair.plan(heads, {"A": 4}, 1, {}) == {"B": 1}  # 5/5 < 2/1
    assert fair.plan([Head("A", 200, 1), Head("B", 100, 1)], {}, 1, {}) == {"B": 1}
    assert fair.plan([Head("A", 100, 1), Head("B", 200, 1)], {}, 1, {}) == {"A": 1}
    assert fair.plan(heads, {}, 100, {}) == {"A": 5, "B": 2}


def test_plan_leaves_tasks_without_user_or_limit_unlimited() -> None:
    assert fair.plan([Head(None, 100, 1)], {}, 7, {}) == {None: 7}
    assert fair.plan([Head("A", 100, None)], {"A": 50}, 4, {}) == {"A": 4}
    # a user-less head keeps its weight: max_running 3 beats A's 2, 1 and so on.
    assert fair.plan([Head(None, 100, 3), Head("A", 50, 2)], {}, 4, {}) == {None: 4}


def test_plan_caps_users_with_fewer_tasks_available() -> None:
    heads = [Head("A", 100, 10), Head("B", 200, 10)]
    assert fair.plan(heads, {}, 6, {"A": 1}) == {"A": 1, "B": 5}
    assert fair.plan(heads, {}, 6, {"A": 0, "B": 2}) == {"B": 2}


def test_allowed() -> None:
    assert fair.allowed(None, 1, 100)
    assert fair.allowed("A", None, 100)
    assert fair.allowed("A", 2, 1)
    assert not fair.allowed("A", 2, 2)


# -- a table created by the original Ruby PerfectQueue ---------------------------------------

ORIGINAL_DDL = {
    "mysql": (
        "CREATE TABLE IF NOT EXISTS `{t}` (id VARCHAR(255) NOT NULL, timeout INT NOT NULL, "
        "data LONGBLOB NOT NULL, created_at INT, resource VARCHAR(255), max_running INT, "
        "owner BIGINT(21) UNSIGNED NOT NULL DEFAULT 0, PRIMARY KEY (id))"
    ),
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS `{t}` (id VARCHAR(255) NOT NULL, timeout INT NOT NULL, "
        "data BLOB NOT NULL, created_at INT, resource VARCHAR(255), max_running INT, "
        "owner BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id))"
    ),
    "postgresql": (  # the same columns in PostgreSQL's types (the original has no PostgreSQL DDL)
        'CREATE TABLE IF NOT EXISTS "{t}" (id VARCHAR(255) NOT NULL, timeout INT NOT NULL, '
        "data BYTEA NOT NULL, created_at INT, resource VARCHAR(255), max_running INT, "
        "owner BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (id))"
    ),
}


def create_original_table(db: Database, table: str) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql(ORIGINAL_DDL[conn.dialect.name].format(t=table))
        conn.exec_driver_sql(f"CREATE INDEX index_{table}_on_timeout ON {table} (timeout)")


def insert_original_rows(db: Database, table: str) -> int:
    now = db_now(db)
    rows = [
        ("plain.1", now - 50, b'{"type":"mail","to":"a@example.com"}', now - 500, "u1", 2),
        ("gz.1", now - 40, gzip.compress(b'{"type":"zipped","n":1}'), now - 400, None, None),
        ("report.2024.1", now - 30, b'{"n":3}', now - 300, "u2", 1),
        ("broken.1", now - 20, b"{not json", now - 200, None, None),
        ("done.1", now - DELETE_OFFSET + 300, b'{"type":"mail"}', None, None, None),
    ]
    with db.engine.begin() as conn:
        for row in rows:
            conn.exec_driver_sql(
                f"INSERT INTO {table} (id, timeout, data, created_at, resource, max_running) "
                + ("VALUES (?, ?, ?, ?, ?, ?)" if db.is_sqlite else "VALUES (%s, %s, %s, %s, %s, %s)"),
                row,
            )
    return now


def index_names(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        return {str(ix["name"]) for ix in sa.inspect(conn).get_indexes(table)}


@pytest.mark.parametrize("fair_mode", [True, False])
def test_original_table_is_served_before_and_after_init(
    database: Database, table_name: str, fair_mode: bool
) -> None:
    create_original_table(database, table_name)
    insert_original_rows(database, table_name)
    store = QueueStore(database, table_name, fair=fair_mode)
    assert f"index_{table_name}_on_resource" not in index_names(database, table_name)

    plain, gz, report, broken, done = (
        store.get(i) for i in ("plain.1", "gz.1", "report.2024.1", "broken.1", "done.1")
    )
    assert (plain.type, plain.data, plain.user, plain.max_running) == (
        "mail",
        {"to": "a@example.com"},
        "u1",
        2,
    )
    assert (gz.type, gz.data, gz.compression) == ("zipped", {"n": 1}, "gzip")
    assert (report.type, report.data) == ("report", {"n": 3})  # type from the id's prefix
    assert (broken.type, broken.data) == ("broken", {})  # unreadable JSON reads as {}
    assert (done.status, done.type, done.created_at) == (TaskStatus.FINISHED, "mail", None)
    assert {t.status for t in (plain, gz, report, broken)} == {TaskStatus.WAITING}
    assert [t.id for t in store.list().tasks] == ["broken.1", "done.1", "gz.1", "plain.1", "report.2024.1"]
    assert [t.id for t in store.list(status=TaskStatus.FINISHED).tasks] == ["done.1"]
    assert [t.id for t in store.list(task_type="report").tasks] == ["report.2024.1"]
    counts = store.counts()
    assert (counts.waiting, counts.running, counts.finished) == (4, 0, 1)
    with pytest.raises(AlreadyExistsError):
        store.submit(NewTask("done.1", "mail"))

    acquired = store.acquire(10, 600)
    oldest_first = ["plain.1", "gz.1", "report.2024.1", "broken.1"]
    assert sorted(a.task.id for a in acquired) == sorted(oldest_first)
    if not fair_mode:
        assert [a.task.id for a in acquired] == oldest_first
    by_id = {a.task.id: a for a in acquired}
    store.heartbeat("gz.1", by_id["gz.1"].lease, 600, data={"n": 2})
    assert (store.get("gz.1").data, store.get("gz.1").compression) == ({"n": 2}, "gzip")
    for a in acquired:
        store.finish(a.task.id, a.lease)
    assert store.acquire(10, 600) == []
    assert store.counts().finished == 5

    added = ["attempts", "max_attempts", "last_error", "outcome", "cancel_requested", "traceparent"]
    assert store.init() == [
        *(f"added column {name}" for name in added),
        f"created index index_{table_name}_on_outcome",
        f"created index index_{table_name}_on_resource",
    ]
    assert store.init() == []
    assert f"index_{table_name}_on_resource" in index_names(database, table_name)
    with database.engine.connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns(table_name)]
    assert columns == ["id", "timeout", "data", "created_at", "resource", "max_running", "owner", *added]
    assert store.get("plain.1").attempts == 0  # rows in place read the added columns' defaults
    store.submit(NewTask("new.1", "x", user="u1", max_running=1))
    [got] = store.acquire(10, 600)
    assert got.task.id == "new.1"
    store.finish("new.1", got.lease)


def test_init_is_idempotent_on_a_fresh_table(store: QueueStore) -> None:
    assert store.init() == []
    names = index_names(store.db, store.table.name)
    assert {f"index_{store.table.name}_on_timeout", f"index_{store.table.name}_on_resource"} <= names


# -- MariaDB: collation and query plans ------------------------------------------------------


@pytest.fixture
def mysql_db() -> Iterator[Database]:
    db = Database(require_mysql())
    yield db
    db.dispose()


@pytest.fixture
def loaded(mysql_db: Database) -> Iterator[QueueStore]:
    """A MariaDB table with 5,000 rows: waiting tasks of 30 users (and none), 1,000 finished."""
    name = "t_" + uuid.uuid4().hex[:16]
    store = QueueStore(mysql_db, name)
    store.init()
    now = db_now(mysql_db)
    rows = []
    for i in range(5000):
        finished = i % 5 == 0
        rows.append(
            {
                "id": f"task-{i:05d}",
                "timeout": now - DELETE_OFFSET + 300 if finished else now - 1000 + i % 977,
                "data": b'{"type":"x"}',
                "created_at": None if finished else now - 2000,
                "resource": None if finished or i % 7 == 0 else f"user{i % 30}",
                "max_running": 3,
                "owner": 0,
            }
        )
    with mysql_db.engine.begin() as conn:
        conn.execute(sa.insert(store.table), rows)
        conn.exec_driver_sql(f"ANALYZE TABLE {name}").all()
    yield store
    drop_table(mysql_db, name)


def explain_statements(store: QueueStore, operation: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """Run ``operation`` and EXPLAIN every SELECT it sent to the server, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip("( ").upper().startswith("SELECT") and store.table.name in statement:
            sent.append((statement, parameters))

    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        operation()
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
    plans = []
    with store.db.engine.connect() as conn:
        for statement, parameters in sent:
            plan = [dict(r) for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters).mappings()]
            plans.append((statement, plan))
    return plans


def test_mysql_non_fair_acquire_scans_the_timeout_index_range(loaded: QueueStore) -> None:
    unfair = QueueStore(loaded.db, loaded.table.name, fair=False)
    plans = explain_statements(unfair, lambda: unfair.acquire(10, 600))
    [plan] = [p for s, p in plans if "ORDER BY" in s and "FOR UPDATE" in s]
    [step] = plan
    assert step["key"] == f"index_{loaded.table.name}_on_timeout", plan
    assert step["type"] == "range", plan


def test_mysql_fair_heads_use_index_for_group_by(loaded: QueueStore) -> None:
    acquired: list[Any] = []
    plans = explain_statements(loaded, lambda: acquired.extend(loaded.acquire(50, 600)))
    assert users_of(acquired)[None] > 0 and len(acquired) == 50
    [plan] = [p for s, p in plans if "GROUP BY" in s and "min(" in s.lower()]
    grouped = [step for step in plan if "Using index for group-by" in (step["Extra"] or "")]
    assert grouped, plan
    assert grouped[0]["key"] == f"index_{loaded.table.name}_on_resource", plan
    for statement, plan in plans:  # and nothing acquisition reads walks the whole table
        assert all(
            step["type"] != "ALL" or step["table"].startswith(("<derived", "<union")) for step in plan
        ), (
            statement,
            plan,
        )


def test_mysql_a_plan_cut_short_by_the_server_is_never_taken_for_the_whole(loaded: QueueStore) -> None:
    """The plan's running counts and heads come as one JSON array, which MariaDB cuts at
    ``group_concat_max_len`` — at some lengths at an element's end, leaving valid JSON with
    fewer elements. Its count tells, at every length, so no user is ever left out of a plan."""
    loaded.acquire(1, 600)  # the statements are built by the first acquisition
    assert loaded._acquisition._plan is not None
    as_json, _ = loaded._acquisition._plan
    assert as_json is not None
    cut_but_valid = 0
    with loaded.db.engine.connect() as conn:
        _, whole = _json_plan(conn, as_json)
        assert whole is not None and len(whole) > 20  # users' heads, tasks without a user, running
        length = len(conn.execute(as_json).one()[2])
        for limit in range(4, length + 2):
            conn.exec_driver_sql(f"SET SESSION group_concat_max_len = {limit}")
            with contextlib.suppress(ValueError):
                cut_but_valid += len(json.loads(conn.execute(as_json).one()[2])) < len(whole)
            assert _json_plan(conn, as_json)[1] in (None, whole), limit
    assert cut_but_valid > 0


def test_mysql_fair_acquisition_reads_users_as_stored_from_either_form_of_the_plan(
    mysql_db: Database,
) -> None:
    """Users as a table shared with the original may name them; the same acquisitions whether
    the plan comes as JSON or, where the server cuts its JSON short, as rows (and from then on
    only as rows: it would be cut again)."""
    users = ['quo"te', "back\\slash", "é", "\u0001ctl", "emoji \U0001f642", "trailing ", None]
    cut = Database(require_mysql())
    sa.event.listen(
        cut.engine,
        "connect",
        lambda dbapi_conn, _: dbapi_conn.cursor().execute("SET SESSION group_concat_max_len = 4"),
    )
    names = ["t_" + uuid.uuid4().hex[:16] for _ in range(2)]
    try:
        stores = [QueueStore(mysql_db, names[0]), QueueStore(cut, names[1])]
        now = db_now(mysql_db)
        rows = [
            {
                "id": f"task-{u}-{n}",
                "timeout": now - 1000 + 10 * u + n,  # no two heads alike: one order
                "data": b'{"type":"x"}',
                "created_at": now - 2000,
                "resource": user,
                "max_running": 1,
                "owner": 0,
            }
            for u, user in enumerate(users)
            for n in range(2)
        ]
        for store in stores:
            store.init()
            with store.db.engine.begin() as conn:
                conn.execute(sa.insert(store.table), rows)
        sent: list[str] = []
        sa.event.listen(cut.engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
        taken = [[(a.task.user, a.task.id) for a in store.acquire(4, 600)] for store in stores]
        assert taken[0] == taken[1] == [(user, f"task-{u}-0") for u, user in enumerate(users[:4])]
        taken = [[(a.task.user, a.task.id) for a in store.acquire(10, 600)] for store in stores]
        assert taken[0] == taken[1]
        assert sorted(taken[0], key=str) == sorted(
            [(user, f"task-{u}-0") for u, user in enumerate(users) if u >= 4] + [(None, "task-6-1")], key=str
        )
        # cut short, then read as rows, and as rows only from then on
        plans = ["json_arrayagg" in s.lower() for s in sent if "min(" in s.lower()]
        assert plans == [True, False, False]
    finally:
        for name in names:
            drop_table(mysql_db, name)
        cut.dispose()


def test_server_versions_decide_the_json_plan(loaded: QueueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON_ARRAYAGG is MariaDB 10.5+ and MySQL 5.7.22+; on an older server the plan is read as
    rows from the start and fair acquisition goes on alike."""

    def dialect(mariadb: bool, version: tuple[int, ...]) -> Any:
        return SimpleNamespace(dialect=SimpleNamespace(is_mariadb=mariadb, server_version_info=version))

    json_plan = {"mariadb": (10, 5), "mysql": (5, 7, 22)}
    assert server_at_least(dialect(True, (10, 5, 0)), **json_plan)
    assert not server_at_least(dialect(True, (10, 4, 34)), **json_plan)
    assert server_at_least(dialect(False, (8, 0, 36)), **json_plan)
    assert not server_at_least(dialect(False, (5, 7, 21)), **json_plan)
    monkeypatch.setattr(acquire, "server_at_least", lambda *_, **__: False)
    older = QueueStore(loaded.db, loaded.table.name)
    assert len(older.acquire(50, 600)) == 50
    assert older._acquisition._plan is not None and older._acquisition._plan[0] is None


def test_mysql_ids_use_a_binary_no_pad_collation(mysql_db: Database) -> None:
    name = "t_" + uuid.uuid4().hex[:16]
    try:
        QueueStore(mysql_db, name).init()
        with mysql_db.engine.connect() as conn:
            collation = conn.execute(
                sa.text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND table_name = :t AND column_name = 'id'"
                ),
                {"t": name},
            ).scalar_one()
        assert collation in ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")
    finally:
        drop_table(mysql_db, name)
