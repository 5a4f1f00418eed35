"""The original's configuration file, as an operator moving from Ruby PerfectQueue brings it:
every key it reads is accepted by ``serve``, ``init``, ``run`` and the task commands (used, or
ignored with one info line); a key nobody knows is refused with the nearest valid name; the
commands take ``PERFECTQUEUE_URL``/``_QUEUE``/``_TOKEN``/``_CONFIG``; the README's file serves
the workers too; and ``sslca`` means TLS with a verified CA, against a MariaDB of the test's own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from conftest import IN_CI
from mariadb_instance import MARIADBD, MariaDB
from postgres_instance import INITDB, POSTGRES, PostgreSQL

from perfectqueue.configfile import command_settings
from perfectqueue.errors import ConfigError
from perfectqueue.service.config import load_settings, settings_from
from perfectqueue.service.store import Database
from perfectqueue.service.store.tls import with_tls
from perfectqueue.worker.config import WorkerConfig

ORIGINAL_KEYS = {
    # the keys the original's worker, supervisor and rdb_compat backend read (its source and README)
    "type": "rdb_compat",
    "table": "jobs",
    "processors": 2,
    "processor_type": "process",
    "poll_interval": 0.3,
    "retention_time": 300,
    "task_heartbeat_interval": 2,
    "alive_time": 300,
    "retry_wait": 300,
    "child_kill_interval": 0.5,
    "child_graceful_kill_limit": 30,
    "child_heartbeat_interval": 0.5,
    "child_heartbeat_limit": 10.0,
    "child_heartbeat_kill_delay": 10,
    "child_keepalive_interval": 2,
    "child_fork_frequency_limit": 0.5,
    "detach_wait": 10,
    "max_request_per_child": 100,
    "task_prefetch": 0,
    "disable_resource_limit": False,
    "cleanup_interval": 20,
    "pq_connect_timeout": 20,
    "connect_timeout": 10,
    "use_connection_pooling": False,
    "debug": False,
    "ssl_mode": "disabled",
    "logger": None,
    "daemon": False,
    "timeout": 10,
    "retries": 3,
}
MEANINGLESS_HERE = [
    "child_heartbeat_kill_delay",
    "child_keepalive_interval",
    "connect_timeout",
    "daemon",
    "debug",
    "logger",
    "pq_connect_timeout",
    "use_connection_pooling",
]
APP = (
    "from perfectqueue.worker import Base\n\n\n"
    "class Done(Base):\n"
    "    def run(self):\n"
    "        self.task.finish()\n"
)


def environ(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}
    return {**clean, **extra}


def command(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perfectqueue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environ(**env),
        check=False,
    )


def original_file(tmp_path: Path, **changes: Any) -> Path:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: ssl_mode is disabled\n")
    values = {**ORIGINAL_KEYS, "url": f"sqlite:///{tmp_path / 'q.sqlite3'}", "sslca": str(ca), **changes}
    path = tmp_path / "perfectqueue.yml"
    path.write_text(yaml.safe_dump({"production": values}))
    return path


def ignored_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "ignoring the original's keys" in line]


def assert_said_once(stderr: str) -> None:
    [line] = ignored_lines(stderr)
    assert re.findall(r"(?:: |; )(\w+) \(", line) == MEANINGLESS_HERE, line


# -- every command takes the original's file -------------------------------------------------------


def test_serve_takes_the_originals_file_and_names_what_it_ignores(tmp_path: Path) -> None:
    settings = load_settings(original_file(tmp_path), "production", environ={})
    assert list(settings.ignored) == MEANINGLESS_HERE
    resolved = settings.queue("jobs")
    assert (resolved.table, resolved.ssl_mode, resolved.sslca) == (
        "jobs",
        "disabled",
        str(tmp_path / "ca.pem"),
    )


def test_init_the_task_commands_and_run_take_the_originals_file(tmp_path: Path) -> None:
    config = str(original_file(tmp_path))
    done = command("init", "-c", config, "-e", "production")
    assert done.returncode == 0, done.stderr
    assert_said_once(done.stderr)
    done = command("submit", "t-1", "job", "{}", "-c", config, "-e", "production")
    assert done.returncode == 0, done.stderr
    assert_said_once(done.stderr)

    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "perfectqueue", "run", "app:Done", "-c", config, "-e", "production"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ(),
        )
    try:
        deadline = time.monotonic() + 30
        while '"status": "finished"' not in command("show", "t-1", "-c", config, "-e", "production").stdout:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    text = log.read_text()
    assert_said_once(text)  # once at start, not once per child
    assert text.count("event=child_start") == 2  # processors: 2, from the file


# -- a key nobody knows ----------------------------------------------------------------------------


def test_a_misspelt_key_is_refused_with_the_nearest_name_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'procesors': did you mean 'processors'"):
        WorkerConfig.from_mapping({"url": "http://127.0.0.1:8000", "procesors": 2})
    with pytest.raises(ConfigError, match="unknown key 'retension_time': did you mean 'retention_time'"):
        settings_from({"retension_time": 5})
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        settings_from({"colour": "blue"})  # the service knows every key it may be given
    path = tmp_path / "cli.yml"
    path.write_text(yaml.safe_dump({"url": "http://127.0.0.1:1", "queu": "q"}))
    done = command("stats", "-c", str(path))
    assert done.returncode == 2 and "did you mean 'queue'" in done.stderr, done.stderr


def test_an_applications_own_keys_stay_the_workers() -> None:
    config = WorkerConfig.from_mapping({"url": "http://127.0.0.1:8000", "mail_host": "smtp.internal"})
    assert config.raw["mail_host"] == "smtp.internal"


# -- the environment and the flags -----------------------------------------------------------------


def test_the_environment_is_over_the_file_and_under_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"url": "http://file:1", "queue": "from-file", "token": "file"}))
    env = {"PERFECTQUEUE_CONFIG": str(path), "PERFECTQUEUE_URL": "http://env:2", "PERFECTQUEUE_TOKEN": "env"}
    settings = command_settings(None, None, {"url": "http://flag:3", "queue": None}, environ=env)
    assert (settings["url"], settings["queue"], settings["token"]) == ("http://flag:3", "from-file", "env")


def test_a_command_reads_perfectqueue_url_and_names_it_when_it_cannot_connect() -> None:
    done = command("stats", PERFECTQUEUE_URL="http://127.0.0.1:9")
    assert done.returncode == 2
    assert "cannot reach the service at http://127.0.0.1:9" in done.stderr, done.stderr


def test_the_readmes_file_serves_the_service_and_a_worker(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("# perfectqueue.yml", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    values = yaml.safe_load(block)["production"]
    values["url"] = f"sqlite:///{tmp_path / 'q.sqlite3'}"  # the README's names a MySQL host
    path = tmp_path / "perfectqueue.yml"
    path.write_text(yaml.safe_dump({"production": values}))
    config = ["-c", str(path), "-e", "production"]
    assert command("init", *config).returncode == 0
    done = command("submit", "r-1", "report", "{}", *config, PERFECTQUEUE_QUEUE="reports")
    assert done.returncode == 0, done.stderr
    with Database(values["url"]).engine.connect() as conn:  # the queue's own table, from `queues:`
        assert conn.execute(sa.text("SELECT id FROM pq_reports")).scalars().all() == ["r-1"]
    (tmp_path / "app.py").write_text(APP)
    worker = subprocess.Popen(
        [sys.executable, "-m", "perfectqueue", "run", "app:Done", *config, "--queue", "reports"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environ(PERFECTQUEUE_PROCESSORS="1"),
    )
    try:
        deadline = time.monotonic() + 30
        while '"status": "finished"' not in command("show", "r-1", *config, "--queue", "reports").stdout:
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


# -- sslca: TLS with a verified CA -----------------------------------------------------------------


def make_ca(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signed (for 127.0.0.1 and localhost)."""
    ca_key, ca, key, csr, cert = (
        directory / f"{name}-{part}" for part in ("ca.key", "ca.pem", "key", "csr", "pem")
    )
    openssl = ["openssl"]
    subprocess.run(
        [*openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
         "-keyout", str(ca_key), "-out", str(ca)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    san = directory / f"{name}-san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        [*openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-extfile", str(san), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return ca, cert, key


@pytest.fixture
def tls_mariadb(tmp_path: Path) -> Any:
    if MARIADBD is None:
        if IN_CI:
            pytest.fail("mariadbd is not installed (mandatory in CI)")
        pytest.skip("mariadbd is not installed")
    ca, cert, key = make_ca(tmp_path, "server")
    base = tmp_path / "mariadb"
    base.mkdir()
    server = MariaDB(base, options=(f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}"))
    server.install()
    try:
        server.start()
        yield server, ca
    finally:
        server.stop()


ENCRYPTED = {  # is this session's connection TLS? (a non-empty cipher / PostgreSQL's own view)
    "mysql": "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME = 'Ssl_cipher'",
    "postgresql": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
}


def encrypted(url: str) -> bool:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            return bool(conn.execute(sa.text(ENCRYPTED[conn.dialect.name])).scalar())
    finally:
        db.dispose()


def test_sslca_means_tls_with_the_server_verified(tls_mariadb: Any, tmp_path: Path) -> None:
    server, ca = tls_mariadb
    assert not encrypted(with_tls(server.url, str(ca), "disabled"))
    assert encrypted(server.url)  # the driver's default: TLS when offered, unverified
    assert encrypted(with_tls(server.url, str(ca), None))  # host name checked too: 127.0.0.1 is in it
    assert encrypted(with_tls(server.url, str(ca), "verify_ca"))
    assert encrypted(with_tls(server.url, None, "required"))
    wrong, _, _ = make_ca(tmp_path, "other")
    with pytest.raises(sa.exc.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        encrypted(with_tls(server.url, str(wrong), None))


def test_init_connects_with_the_files_sslca_and_refuses_a_wrong_one(tls_mariadb: Any, tmp_path: Path) -> None:
    server, ca = tls_mariadb
    path = tmp_path / "tls.yml"
    path.write_text(yaml.safe_dump({"url": server.url, "table": "tls_jobs", "sslca": str(ca)}))
    done = command("init", "-c", str(path))
    assert done.returncode == 0, done.stderr
    wrong, _, _ = make_ca(tmp_path, "other")
    path.write_text(yaml.safe_dump({"url": server.url, "table": "tls_jobs", "sslca": str(wrong)}))
    done = command("init", "-c", str(path))
    assert done.returncode != 0 and "perfectqueue: error:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_tls_settings_that_cannot_work_stop_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs sslca"):
        with_tls("mysql://root@127.0.0.1/test", None, "verify_identity")
    with pytest.raises(ConfigError, match="cannot be read"):
        with_tls("mysql://root@127.0.0.1/test", str(tmp_path / "missing.pem"), None)
    assert with_tls("sqlite:///x", "/nowhere", "verify_ca") == "sqlite:///x"  # not MySQL: not read


@pytest.fixture
def tls_postgres(tmp_path: Path) -> Any:
    if INITDB is None or POSTGRES is None:
        if IN_CI:
            pytest.fail("PostgreSQL's initdb / postgres are not installed (mandatory in CI)")
        pytest.skip("PostgreSQL's initdb / postgres are not installed")
    ca, cert, key = make_ca(tmp_path, "server")
    server = PostgreSQL()
    server.install()
    for name, path in (("server.crt", cert), ("server.key", key)):
        shutil.copy(path, server.datadir / name)
        (server.datadir / name).chmod(0o600)
        if server.user is not None:
            os.chown(server.datadir / name, server.user.pw_uid, server.user.pw_gid)
    server.options = ("-c", "ssl=on")
    try:
        server.start()
        yield server, ca
    finally:
        server.stop()


def test_sslca_means_tls_with_the_server_verified_on_postgresql(tls_postgres: Any, tmp_path: Path) -> None:
    server, ca = tls_postgres
    assert not encrypted(with_tls(server.url, str(ca), "disabled"))
    assert encrypted(with_tls(server.url, str(ca), None))  # verify-full: 127.0.0.1 is in the certificate
    assert encrypted(with_tls(server.url, None, "required"))
    wrong, _, _ = make_ca(tmp_path, "other")
    with pytest.raises(sa.exc.OperationalError, match="certificate verify failed"):
        encrypted(with_tls(server.url, str(wrong), "verify_ca"))
