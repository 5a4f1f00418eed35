"""A MariaDB server of the test's own (its data directory, port and socket), to kill and restart.

The machine's shared server on 3306 is never touched: fault tests start ``mariadbd`` on a free
port over a data directory made by ``mariadb-install-db`` under ``tmp_path``, SIGKILL it and start
it again on the same directory and port. Without ``mariadbd`` the tests skip (fail with CI=true).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from conftest import IN_CI
from servers import free_port

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which(
    "mariadb-install-db", path="/usr/bin:/usr/sbin:/usr/local/bin"
)


class MariaDB:
    """One ``mariadbd`` process at a time over one data directory, on one port."""

    def __init__(self, base: Path, options: tuple[str, ...] = ()) -> None:
        self.base = base
        self.options = options  # more mariadbd options (a Galera node's, say)
        self.env: dict[str, str] | None = None  # mariadbd's environment (None: this process's)
        self.datadir = base / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mysql://root@127.0.0.1:{self.port}/test"

    def install(self) -> None:
        assert INSTALL_DB is not None
        subprocess.run(
            [INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", "--skip-test-db"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, timeout: float = 60, once: tuple[str, ...] = ()) -> None:
        """Start on the data directory; ``once``: options for this start only (``--wsrep-new-cluster``)."""
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            self.command(*once), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )
        self._wait_answering(timeout)

    def command(self, *once: str) -> list[str]:
        """The ``mariadbd`` command line for this server, with ``once`` appended."""
        assert MARIADBD is not None
        return [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--tmpdir={self.base}",  # not /tmp: a starting server deletes the #sql files of its tmpdir
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.base / 'mysqld.sock'}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.base / 'error.log'}",
            "--user=root",
            "--skip-grant-tables",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--max-connections=500",
            *self.options,
            *once,
        ]

    def _wait_answering(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}; see {self.base}/error.log")
            try:
                conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1)
                try:
                    with conn.cursor() as cursor:
                        cursor.execute("CREATE DATABASE IF NOT EXISTS test")
                finally:
                    conn.close()
                return
            except pymysql.err.MySQLError:  # not listening yet, or a Galera node still joining
                if time.monotonic() > deadline:
                    raise RuntimeError("mariadbd did not answer in time") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, InnoDB recovers on the next start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[MariaDB]:
    """A running MariaDB of this test's own; always stopped at teardown."""
    if MARIADBD is None or INSTALL_DB is None:
        message = "mariadbd / mariadb-install-db are not installed"
        if IN_CI:
            pytest.fail(message + " (mandatory in CI)")
        pytest.skip(message)
    base = tmp_path / "mariadb"
    base.mkdir()
    server = MariaDB(base)
    server.install()
    try:
        server.start()
        yield server
    finally:
        server.stop()
