"""Settings: the seed's YAML (flat or per environment), PERFECTQUEUE_* variables, overrides, and
the loud refusal of anything invalid."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import require_mysql, require_postgres

import perfectqueue
from perfectqueue.configfile import read_section
from perfectqueue.errors import ConfigError
from perfectqueue.service.config import Settings, load_settings, settings_from
from perfectqueue.service.store import Database, normalize_url
from perfectqueue.service.store.model import RetryPolicy
from perfectqueue.settings import CONNECTION_KEYS, QUEUE_FIELDS, QUEUE_KEYS, WORKER_KEYS, QueueSettings
from perfectqueue.worker.config import WorkerConfig

SEED_WORKER_KEYS = {
    "log": "/var/log/perfectqueue.log",
    "processors": 4,
    "poll_interval": 1.0,
    "task_heartbeat_interval": 2,
    "child_kill_interval": 2.0,
    "child_graceful_kill_limit": 30,
    "child_heartbeat_interval": 2,
    "child_heartbeat_limit": 10.0,
}


def write(tmp_path: Path, text: str, name: str = "perfectqueue.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path | None = None, environment: str | None = None, **kwargs: Any) -> Settings:
    """load_settings with an empty environment unless one is given."""
    return load_settings(path, environment, kwargs.get("overrides"), kwargs.get("environ", {}))


SECTIONS = """\
    development:
      type: rdb_compat
      url: sqlite:///dev.sqlite3
      table: dev_tasks
      alive_time: 30
    production:
      type: rdb_compat
      url: mysql://app:secret@db.internal:3306/queue
      table: prod_tasks
      retry_wait: 60
"""


# -- defaults --------------------------------------------------------------------------------


def test_defaults_are_the_seeds() -> None:
    settings = load()
    assert (settings.alive_time, settings.retry_wait, settings.retention_time) == (300, 300, 300)
    assert settings.type == "rdb_compat"
    assert settings.url == "sqlite:///perfectqueue.sqlite3"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert list(settings.queues) == ["default"]
    queue = settings.queue("default")
    assert (queue.table, queue.url, queue.alive_time, queue.retry_wait, queue.retention_time) == (
        "default",
        "sqlite:///perfectqueue.sqlite3",
        300,
        300,
        300,
    )
    assert queue.fair is True


# -- the YAML file ---------------------------------------------------------------------------


def test_environment_sections_default_to_development(tmp_path: Path) -> None:
    settings = load(write(tmp_path, SECTIONS))
    assert settings.url == "sqlite:///dev.sqlite3"
    assert list(settings.queues) == ["dev_tasks"]
    assert settings.alive_time == 30
    assert settings.retry_wait == 300


def test_environment_section_chosen_by_argument(tmp_path: Path) -> None:
    settings = load(write(tmp_path, SECTIONS), "production")
    assert settings.url == "mysql://app:secret@db.internal:3306/queue"
    assert settings.queue("prod_tasks").table == "prod_tasks"
    assert (settings.alive_time, settings.retry_wait) == (300, 60)


def test_environment_section_chosen_by_perfectqueue_env(tmp_path: Path) -> None:
    path = write(tmp_path, SECTIONS)
    assert load(path, environ={"PERFECTQUEUE_ENV": "production"}).retry_wait == 60
    # The argument wins over the variable.
    assert load(path, "development", environ={"PERFECTQUEUE_ENV": "production"}).alive_time == 30


def test_config_path_from_perfectqueue_config(tmp_path: Path) -> None:
    path = write(tmp_path, SECTIONS)
    assert load(environ={"PERFECTQUEUE_CONFIG": str(path)}).url == "sqlite:///dev.sqlite3"


def test_os_environ_is_read_when_no_environ_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERFECTQUEUE_CONFIG", str(write(tmp_path, SECTIONS)))
    monkeypatch.setenv("PERFECTQUEUE_ENV", "production")
    monkeypatch.setenv("PERFECTQUEUE_ALIVE_TIME", "45")
    settings = load_settings()
    assert (settings.retry_wait, settings.alive_time) == (60, 45)


def test_flat_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        url: sqlite:///flat.sqlite3
        table: flat
        retention_time: 3600
        """,
    )
    for environment in (None, "production"):
        settings = load(path, environment)
        assert settings.url == "sqlite:///flat.sqlite3"
        assert list(settings.queues) == ["flat"]
        assert settings.retention_time == 3600


def test_flat_file_with_only_queues_is_not_taken_for_sections(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "queues:\n  mail: {table: mail_tasks}\n"))
    assert settings.queue("mail").table == "mail_tasks"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")) == load()


def test_seed_file_with_worker_keys_is_accepted(tmp_path: Path) -> None:
    lines = "".join(f"  {key}: {value}\n" for key, value in SEED_WORKER_KEYS.items())
    path = write(
        tmp_path,
        "development:\n  type: rdb_compat\n  url: mysql://user:password@host:3306/database\n"
        "  table: test_queues\n  retention_time: 60\n" + lines,
    )
    settings = load(path)
    assert settings.url == "mysql://user:password@host:3306/database"
    assert list(settings.queues) == ["test_queues"]
    assert settings.retention_time == 60
    dumped = settings.model_dump()
    assert not set(SEED_WORKER_KEYS) & set(dumped)


def test_worker_keys_are_ignored_by_settings_from() -> None:
    extra = {**SEED_WORKER_KEYS, "queue": "q", "token": "x", "processor_type": "process"}
    assert settings_from(extra) == settings_from({})


def test_per_queue_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        url: sqlite:///main.sqlite3
        alive_time: 100
        retry_wait: 200
        disable_resource_limit: true
        queues:
          mail: {}
          reports:
            table: report_tasks
            url: mysql://root@127.0.0.1/test
            alive_time: 50
            retry_wait: 0
            retention_time: 10
            disable_resource_limit: false
            acquire_lock: get_lock
        """,
    )
    settings = load(path)
    mail, reports = settings.queue("mail"), settings.queue("reports")
    assert (mail.table, mail.url, mail.alive_time, mail.retry_wait, mail.retention_time) == (
        "mail",
        "sqlite:///main.sqlite3",
        100,
        200,
        300,
    )
    assert (mail.fair, mail.acquire_lock) == (False, "skip_locked")
    assert (reports.table, reports.url, reports.alive_time, reports.retry_wait, reports.retention_time) == (
        "report_tasks",
        "mysql://root@127.0.0.1/test",
        50,
        0,
        10,
    )
    assert (reports.fair, reports.acquire_lock) == (True, "get_lock")


# -- environment variables and overrides -----------------------------------------------------


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    environ = {
        "PERFECTQUEUE_URL": "sqlite:///from-env.sqlite3",
        "PERFECTQUEUE_RETENTION_TIME": "900",
        "PERFECTQUEUE_ALIVE_TIME": "12",
        "PERFECTQUEUE_AUTO_INIT": "true",
        "PERFECTQUEUE_PORT": "9999",
        "PERFECTQUEUE_TABLE": "env_table",
        "UNRELATED": "x",
    }
    settings = load(write(tmp_path, SECTIONS), environ=environ)
    assert settings.url == "sqlite:///from-env.sqlite3"
    assert (settings.retention_time, settings.alive_time, settings.port) == (900, 12, 9999)
    assert settings.auto_init is True
    assert list(settings.queues) == ["env_table"]


def test_precedence_overrides_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "alive_time: 10\nretry_wait: 20\nretention_time: 30\n")
    environ = {"PERFECTQUEUE_RETRY_WAIT": "21", "PERFECTQUEUE_RETENTION_TIME": "31"}
    settings = load(path, environ=environ, overrides={"retention_time": 32, "url": None})
    assert settings.alive_time == 10  # file over default
    assert settings.retry_wait == 21  # environment over file
    assert settings.retention_time == 32  # override over environment
    assert settings.url == "sqlite:///perfectqueue.sqlite3"  # a None override is no override
    assert settings.max_poll_wait == 20.0  # default


# -- refusals --------------------------------------------------------------------------------


def refused(values: dict[str, Any], *fragments: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(values)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="retension_time"):
        load(write(tmp_path, "retension_time: 10\n"))
    with pytest.raises(ConfigError, match="retension_time"):
        load(write(tmp_path, "development:\n  retension_time: 10\n"))
    refused({"queues": {"q": {"alive_tme": 1}}}, "alive_tme")


@pytest.mark.parametrize(
    "table",
    ["x; DROP TABLE y", "x`; DROP TABLE y; --", "x'y", 'x"y', "a b", "", "a.b", "a/b", "t" * 65, "tâble"],
)
def test_bad_table_name_is_refused(table: str) -> None:
    refused({"table": table}, "table name")
    refused({"queues": {"q": {"table": table}}}, "table name")


@pytest.mark.parametrize("name", ["bad name", "../x", "", "-x", "q" * 65, "q/1", "q;drop"])
def test_bad_queue_name_is_refused(name: str) -> None:
    refused({"queues": {name: {"table": "t"}}}, "queue name")


@pytest.mark.parametrize("key", ["alive_time", "retry_wait", "retention_time"])
def test_negative_durations_are_refused(key: str) -> None:
    refused({key: -1}, key)
    refused({"queues": {"q": {key: -1}}}, key)
    refused({key: 10**9}, key)


def test_zero_alive_time_is_refused_but_zero_waits_are_not() -> None:
    refused({"alive_time": 0}, "alive_time")
    settings = settings_from({"retry_wait": 0, "retention_time": 0})
    assert (settings.retry_wait, settings.retention_time) == (0, 0)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"type": "redis"}, "type"),
        ({"port": 70000}, "port"),
        ({"acquire_lock": "table_lock"}, "acquire_lock"),
        ({"max_poll_wait": 301}, "max_poll_wait"),
        ({"queues": {"q": ["table"]}}, "queues.q"),
    ],
)
def test_other_invalid_values_are_refused(values: dict[str, Any], fragment: str) -> None:
    refused(values, fragment)


def test_invalid_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="retention_time"):
        load(environ={"PERFECTQUEUE_RETENTION_TIME": "five minutes"})
    with pytest.raises(ConfigError, match="alive_time"):
        load(environ={"PERFECTQUEUE_ALIVE_TIME": "-5"})


def test_missing_environment_section_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, SECTIONS)
    with pytest.raises(ConfigError, match="no section 'staging'") as info:
        load(path, "staging")
    assert "development" in str(info.value) and "production" in str(info.value)
    only_production = write(tmp_path, "production:\n  table: t\n", "prod.yml")
    with pytest.raises(ConfigError, match="no section 'development'"):
        load(only_production)


@pytest.mark.parametrize("text", ["a: [unclosed\n", "- a list\n- of things\n", "just text\n"])
def test_unreadable_file_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"perfectqueue\.yml"):
        load(write(tmp_path, text))


def test_file_not_in_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes("table: tâche\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot read"):
        load(path)


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "url: sqlite:///x\n  table: [t\n"))
    assert "\n" not in str(info.value)
    assert "line 2" in str(info.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "absent.yml")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://app:hunter2@db/queue",
        "mysql+mysqldb://app:hunter2@db/queue",
        "redis://db",
        "queue.db",
        "",
    ],
)
def test_unsupported_url_scheme_is_refused_when_settings_load(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported database url") as info:
        settings_from({"url": url})
    assert "hunter2" not in str(info.value)
    if url:  # an empty per-queue url means "the service's url"
        with pytest.raises(ConfigError, match="unsupported database url"):
            settings_from({"queues": {"q": {"url": url}}})


# -- database urls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("mysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"),
        ("mysql2://u:p@h/db", "mysql+pymysql://u:p@h/db?charset=utf8mb4"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql://u@h/db?charset=utf8mb4"),
        (
            "mysql://u@h/db?ssl_verify_cert=true",
            "mysql+pymysql://u@h/db?ssl_verify_cert=true&charset=utf8mb4",
        ),
        ("mysql://u@h/db?charset=utf8", "mysql+pymysql://u@h/db?charset=utf8"),
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db?sslmode=require", "postgresql+psycopg://u@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///perfectqueue.sqlite3", "sqlite:///perfectqueue.sqlite3"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalize_url(url: str, normalised: str) -> None:
    assert normalize_url(url) == normalised


def test_mysql_url_connects_through_pymysql() -> None:
    url = require_mysql()
    assert url.startswith("mysql://")
    db = Database(url)
    try:
        assert db.engine.dialect.driver == "pymysql"
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            charset = conn.execute(sa.text("SELECT @@character_set_client")).scalar()
        assert charset == "utf8mb4"
    finally:
        db.dispose()


def test_postgresql_url_connects_through_psycopg() -> None:
    db = Database(require_postgres())
    try:
        assert db.engine.dialect.driver == "psycopg"
        with db.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        db.dispose()


def test_table_and_queues_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="either 'table'"):
        settings_from({"table": "jobs", "queues": {"mails": {"table": "pq_mails"}}})


def test_a_queue_whose_name_is_no_table_name_must_name_its_table() -> None:
    with pytest.raises(ConfigError, match=r"queue 'mail\.out' needs a 'table'"):
        settings_from({"queues": {"mail.out": {}}})
    assert (
        settings_from({"queues": {"mail.out": {"table": "mail_out"}}}).queue("mail.out").table == "mail_out"
    )
    assert settings_from({"queues": {"mail-out": {}}}).queue("mail-out").table == "mail-out"


def test_the_readmes_example_settings_load() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = settings_from(yaml.safe_load(block)["production"])
    assert sorted(settings.queues) == ["mails", "reports"]
    assert settings.queue("reports").alive_time == 900
    assert not settings.queue("reports").fair


# -- one declaration ---------------------------------------------------------------------------


def test_the_service_models_are_derived_from_the_declaration() -> None:
    settings, overrides = settings_from({}), settings_from({"queues": {"q": {}}}).queues["q"]
    for name, field in QUEUE_FIELDS.items():
        assert name in Settings.model_fields and name in type(overrides).model_fields
        assert getattr(overrides, name) is None  # a queue inherits what it does not set
        if name != "url":  # the service's own default database
            assert getattr(settings, name) == field.default, name
    assert settings.url == "sqlite:///perfectqueue.sqlite3"


@pytest.mark.parametrize("name", sorted(QUEUE_KEYS - {"table", "url"}))
def test_every_queue_setting_is_bounded_alike_everywhere(name: str) -> None:
    """The bounds declared once hold for the service-wide value, a queue's override, the direct
    backend and the store's retry policy."""
    default = QUEUE_FIELDS[name].default
    bad = "maybe" if isinstance(default, bool) else "no" if isinstance(default, str) else -1
    refused({name: bad}, name)
    refused({"queues": {"q": {name: bad}}}, name)
    with pytest.raises(ConfigError, match=name):
        QueueSettings(**{name: bad})


def test_the_defaults_are_the_documented_ones() -> None:
    defaults = QueueSettings()
    assert (defaults.alive_time, defaults.retry_wait, defaults.retention_time) == (300, 300, 300)
    assert (defaults.fair, defaults.acquire_lock, defaults.max_attempts) == (True, "skip_locked", 10)
    assert (defaults.dead_retention_time, defaults.retry_backoff) == (604800, "exponential")
    assert (defaults.retry_wait_max, defaults.retry_jitter) == (86400, 0.25)
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    doc = doc.replace("`exponential`", "exponential")
    unlike = {"table", "url", "disable_resource_limit", "acquire_lock", "sslca", "ssl_mode"}
    for name in QUEUE_KEYS - unlike:
        assert f"| `{name}` | {QUEUE_FIELDS[name].default}" in doc, name


def test_the_originals_retries_are_two_keys_away() -> None:
    """Unlimited attempts, retry_wait every time: for a table shared with Ruby processes."""
    settings = settings_from({"url": "sqlite:///q.db", "max_attempts": None, "retry_backoff": "constant"})
    policy = settings.queue("default").retry_policy()
    assert [policy.wait(n) for n in (1, 5, 30)] == [300, 300, 300]
    assert not policy.exhausted(10**6, None)
    safe = settings_from({"url": "sqlite:///q.db"}).queue("default").retry_policy()  # the defaults
    assert safe.exhausted(10, None) and not safe.exhausted(9, None)
    assert [225 <= safe.wait(1) <= 300, 450 <= safe.wait(2) <= 600, 64800 <= safe.wait(20) <= 86400] == [
        True
    ] * 3


def test_a_queue_resolves_its_overrides_over_the_service_wide_values() -> None:
    settings = settings_from(
        {
            "retry_backoff": "exponential",
            "max_attempts": 5,
            "queues": {"a": {}, "b": {"table": "bt", "retry_jitter": 0}},
        }
    )
    a, b = settings.queue("a"), settings.queue("b")
    assert (a.name, a.table, b.name, b.table) == ("a", "a", "b", "bt")
    assert (a.retry_jitter, b.retry_jitter, b.retry_backoff, b.max_attempts) == (0.25, 0.0, "exponential", 5)
    policy = b.retry_policy()
    assert isinstance(policy, RetryPolicy) and policy.wait(3) == 1200  # 300 * 2**2, no jitter
    assert policy.exhausted(5, None) and not a.retry_policy().exhausted(4, None)


def test_a_file_shared_with_the_worker_and_the_sdk_is_accepted(tmp_path: Path) -> None:
    """Every key of the worker and of the SDK's connection is known to the service (it refused
    child_fork_frequency_limit, timeout and retries when it kept a list of its own)."""
    shared = {key: None for key in (WORKER_KEYS | CONNECTION_KEYS) - set(Settings.model_fields)}
    shared.update({"child_fork_frequency_limit": 3, "timeout": 5, "retries": 2, "queue": "q"})
    assert settings_from(shared) == settings_from({})
    path = write(
        tmp_path, "development:\n  url: sqlite:///x.sqlite3\n  table: t\n  timeout: 5\n  processors: 2\n"
    )
    config = WorkerConfig.from_mapping(read_section(path))
    assert (config.processors, config.backend["timeout"], config.backend["table"]) == (2, 5, "t")
    assert load(path).queue("t").url == "sqlite:///x.sqlite3"


def test_the_worker_passes_every_queue_setting_to_the_backend() -> None:
    raw = {key: QUEUE_FIELDS[key].default for key in QUEUE_KEYS} | {"url": "sqlite://", "table": "t"}
    backend = WorkerConfig.from_mapping(raw).backend
    assert set(backend) >= QUEUE_KEYS


def test_the_direct_backend_takes_the_declared_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'direct.sqlite3'}"
    options = {"type": "rdb_compat", "url": url, "table": "t", "retry_backoff": "exponential"}
    with perfectqueue.open(
        options, retry_wait=10, disable_resource_limit=True, acquire_lock="get_lock"
    ) as queue:
        store = queue.backend.store
        assert (store.fair, store.lock, store.policy.wait(2)) in {
            (False, "get_lock", w) for w in range(15, 21)
        }
    with pytest.raises(ConfigError, match="retry_jitter"):
        perfectqueue.open(options, retry_jitter=3)


# -- the YAML reader ---------------------------------------------------------------------------


def test_the_service_the_worker_and_the_commands_read_the_same_section(tmp_path: Path) -> None:
    path = write(tmp_path, SECTIONS)
    assert read_section(path, environ={"PERFECTQUEUE_ENV": "production"})["retry_wait"] == 60
    assert read_section(path, "production", environ={"PERFECTQUEUE_ENV": "development"})["retry_wait"] == 60
    assert read_section(path, environ={})["alive_time"] == 30
    with pytest.raises(ConfigError, match="no section 'staging'"):
        read_section(path, "staging")
    flat = write(tmp_path, "url: http://127.0.0.1:8000\nqueue: q\n", "flat.yml")
    assert read_section(flat, "production") == {"url": "http://127.0.0.1:8000", "queue": "q"}


def test_without_pyyaml_a_file_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SECTIONS)
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml: ModuleNotFoundError
    with pytest.raises(ConfigError, match=r"needs PyYAML: pip install 'perfectqueue\[yaml\]'") as info:
        read_section(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="PyYAML"):
        load(path)
