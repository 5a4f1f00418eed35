"""A PostgreSQL server of the test's own (its data directory and port), to kill and restart.

The machine's shared server on 5432 is never touched: fault tests run ``initdb`` into a directory
of their own, start ``postgres`` on a free port, SIGKILL it and start it again on the same
directory and port (crash recovery replays the WAL). PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` user. Without the binaries the tests skip (fail with CI=true).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import IN_CI
from servers import free_port


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return shutil.which(name) or (found[-1] if found else None)


INITDB, POSTGRES = _binary("initdb"), _binary("postgres")


class PostgreSQL:
    """One ``postgres`` process at a time over one data directory, on one port."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pq-postgres-"))  # the server's user must reach it
        self.datadir = self.base / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.options: tuple[str, ...] = ()  # more server settings, as "-c", "name=value" pairs

    def _as_server_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def install(self) -> None:
        assert INITDB is not None
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        subprocess.run(
            [INITDB, "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
            **self._as_server_user(),  # type: ignore[call-overload]
        )

    def start(self, timeout: float = 60) -> None:
        assert POSTGRES is not None
        assert self.proc is None or self.proc.poll() is not None
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"]
        options += self.options
        with (self.base / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                [POSTGRES, "-D", str(self.datadir), "-p", str(self.port), "-k", str(self.base), *options],
                stdout=subprocess.DEVNULL,
                stderr=log,
                **self._as_server_user(),
            )
        self._wait_answering(timeout)

    def _wait_answering(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see {self.base}/server.log")
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres connect_timeout=1").close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError("postgres did not answer in time") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL of the postmaster and of every process it started: a crash of the whole server
        (killed alone, its backends would go on serving the sessions they have)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal_all(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to the postmaster and to every process it started (SIGSTOP: the whole
        server frozen, its kernel still acknowledging packets; SIGCONT: thawed)."""
        assert self.proc is not None
        children = _children_of(self.proc.pid)
        self.proc.send_signal(signum)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def shut_down(self) -> None:
        """A fast shutdown (SIGINT: sessions ended, a checkpoint written); :meth:`start` brings the
        server back on the same data directory and port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        self.shut_down()
        shutil.rmtree(self.base, ignore_errors=True)


def _children_of(parent: int) -> list[int]:
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                children.append(int(stat.split("/")[2]))
    return children


@pytest.fixture
def postgres() -> Iterator[PostgreSQL]:
    """A running PostgreSQL of this test's own; always stopped at teardown."""
    if INITDB is None or POSTGRES is None:
        message = "PostgreSQL's initdb / postgres are not installed"
        if IN_CI:
            pytest.fail(message + " (mandatory in CI)")
        pytest.skip(message)
    server = PostgreSQL()
    server.install()
    try:
        server.start()
        yield server
    finally:
        server.stop()
