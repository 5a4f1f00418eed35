"""A MariaDB Galera cluster of the test's own: three ``mariadbd`` nodes on loopback ports.

Each node is a :class:`mariadb_instance.MariaDB` (its own data directory, port and socket) with
the wsrep options of a Galera node: its own group-communication, IST and SST ports, the cluster
address listing all three, state transfer by rsync. Node 1 bootstraps the cluster
(``--wsrep-new-cluster``), nodes 2 and 3 join it by SST. A node that was SIGKILLed restarts
without bootstrapping and rejoins the running cluster (IST from the gcache, else SST). Without
``galera-4`` (or ``rsync``) the fixture skips, and fails with CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymysql
import pytest
from conftest import IN_CI
from mariadb_instance import INSTALL_DB, MARIADBD, MariaDB
from servers import free_port

PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
SYNCED = 4  # wsrep_local_state


def missing() -> str | None:
    """Why a Galera cluster cannot run here, or None."""
    if MARIADBD is None or INSTALL_DB is None:
        return "mariadbd / mariadb-install-db are not installed"
    if not PROVIDER.exists():
        return f"galera-4 is not installed ({PROVIDER} is missing)"
    if shutil.which("rsync") is None or shutil.which("wsrep_sst_rsync") is None:
        return "rsync (Galera's state transfer here) is not installed"
    return None


SST_METHOD = "rsync_root"
RSYNC_AS_ROOT = """#!/bin/sh
# rsync for Galera's SST script: its daemon, started by root, would drop to "nobody" and fail to
# write the joiner's data directory. Keep it root: this cluster is a test's own, on loopback.
conf=""
previous=""
for arg in "$@"; do
    case "$arg" in --config=*) conf="${arg#--config=}" ;; esac
    [ "$previous" = "--config" ] && conf="$arg"
    previous="$arg"
done
if [ -n "$conf" ] && [ "$(id -u)" = 0 ] && ! grep -q '^uid' "$conf"; then
    sed -i '1i uid = root\\ngid = root' "$conf"
fi
exec REAL_RSYNC "$@"
"""
SST_SCRIPT = """#!/bin/sh
# The SST method "rsync_root": Debian's rsync SST with the rsync above first in PATH (mariadbd
# puts its own bin directory first in the SST script's PATH, so plain "rsync" would not find it).
PATH="$(dirname "$0"):$PATH" exec REAL_SST "$@"
"""


def sst_scripts(base: Path) -> Path:
    """A directory holding the ``rsync_root`` SST method and its ``rsync``, for mariadbd's PATH."""
    bin_dir = base / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir(parents=True)
        for name, template in (("rsync", RSYNC_AS_ROOT), (f"wsrep_sst_{SST_METHOD}", SST_SCRIPT)):
            text = template.replace("REAL_RSYNC", shutil.which("rsync") or "rsync")
            (bin_dir / name).write_text(text.replace("REAL_SST", shutil.which("wsrep_sst_rsync") or ""))
            (bin_dir / name).chmod(0o755)
    return bin_dir


class GaleraCluster:
    """Three nodes over ``base``; ``url`` lists them all, in order (the store's failover list)."""

    def __init__(self, base: Path, size: int = 3) -> None:
        gcomm = [free_port() for _ in range(size)]
        address = "gcomm://" + ",".join(f"127.0.0.1:{port}" for port in gcomm)
        self.nodes: list[MariaDB] = []
        for i in range(size):
            node_base = base / f"node{i + 1}"
            node_base.mkdir(parents=True)
            provider_options = ";".join(
                [
                    f"gmcast.listen_addr=tcp://127.0.0.1:{gcomm[i]}",
                    f"ist.recv_addr=127.0.0.1:{free_port()}",
                    "gcache.size=64M",
                    "pc.recovery=false",
                ]
            )
            options = (
                "--wsrep-on=ON",
                f"--wsrep-provider={PROVIDER}",
                f"--wsrep-cluster-address={address}",
                "--wsrep-cluster-name=pq_test",
                f"--wsrep-node-name=node{i + 1}",
                "--wsrep-node-address=127.0.0.1",
                "--wsrep-node-incoming-address=127.0.0.1:{port}",
                f"--wsrep-sst-receive-address=127.0.0.1:{free_port()}",
                f"--wsrep-provider-options={provider_options}",
                f"--wsrep-sst-method={SST_METHOD}",
                "--wsrep-slave-threads=2",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--innodb-flush-log-at-trx-commit=0",
            )
            node = MariaDB(node_base)
            node.options = tuple(option.replace("{port}", str(node.port)) for option in options)
            node.env = {**os.environ, "PATH": f"{sst_scripts(base)}:{os.environ.get('PATH', '')}"}
            self.nodes.append(node)
        self.url = "mysql://root@" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/test"

    def start(self) -> None:
        """Bootstrap node 1 on a fresh data directory, then let nodes 2 and 3 join at once.

        Node 1 is stopped cleanly once and its data directory copied to the others, so that
        they join knowing the cluster's state (an IST of nothing instead of two full SSTs one
        after the other).
        """
        first = self.nodes[0]
        first.install()
        first.start(once=("--wsrep-new-cluster",))
        self.wait_synced(0)
        first.stop()
        for node in self.nodes[1:]:
            shutil.copytree(first.datadir, node.datadir, ignore=shutil.ignore_patterns("galera.cache"))
        first.start(once=("--wsrep-new-cluster",))
        self.wait_synced(0)
        with ThreadPoolExecutor() as pool:  # both join at once: each IST takes seconds of scripts
            for joined in [pool.submit(self.restart, i, 120) for i in range(1, len(self.nodes))]:
                joined.result()

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (0-based): no shutdown, the others evict it."""
        self.nodes[i].kill()

    def restart(self, i: int, timeout: float = 120) -> None:
        """Start a killed node again: it rejoins the running cluster, by IST when the others'
        gcache still holds what it missed since its recovered position, else by SST."""
        self.recover_position(i)
        self.nodes[i].start(timeout=timeout)
        self.wait_synced(i, timeout)

    def recover_position(self, i: int) -> None:
        """Write InnoDB's last committed position into grastate.dat, as Debian's
        ``galera_recovery`` does before a start: after a SIGKILL the file says seqno -1, and a
        node that does not know its position needs a full SST instead of an IST."""
        node = self.nodes[i]
        state = node.datadir / "grastate.dat"
        if not state.exists() or "seqno:   -1" not in state.read_text():
            return  # a clean shutdown wrote the position
        log = node.base / "recover.log"
        log.unlink(missing_ok=True)
        command = [arg for arg in node.command("--wsrep-recover") if not arg.startswith("--log-error=")]
        subprocess.run(
            [*command, f"--log-error={log}"], check=False, env=node.env, capture_output=True, timeout=120
        )
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.findall(r"WSREP: Recovered position: ([0-9a-f-]{36}):(-?\d+)", text)
        if found and found[-1][0] != "00000000-0000-0000-0000-000000000000":
            uuid, seqno = found[-1]
            lines = state.read_text().splitlines()
            lines = [f"uuid:    {uuid}" if x.startswith("uuid:") else x for x in lines]
            lines = [f"seqno:   {seqno}" if x.startswith("seqno:") else x for x in lines]
            state.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        with ThreadPoolExecutor() as pool:
            for stopped in [pool.submit(node.stop) for node in self.nodes]:
                stopped.result()

    def status(self, i: int, name: str) -> str | None:
        """A ``SHOW STATUS`` value of node ``i`` (None if it does not answer)."""
        try:
            conn = pymysql.connect(
                host="127.0.0.1", port=self.nodes[i].port, user="root", connect_timeout=2, read_timeout=5
            )
        except pymysql.err.MySQLError:
            return None
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW STATUS LIKE %s", (name,))
                row = cursor.fetchone()
                return None if row is None else str(row[1])
        except pymysql.err.MySQLError:
            return None
        finally:
            conn.close()

    def wait_synced(self, i: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.status(i, "wsrep_local_state") != str(SYNCED):
            proc = self.nodes[i].proc
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"galera node {i + 1} exited; see {self.nodes[i].base}/error.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"galera node {i + 1} did not reach Synced in {timeout} s")
            time.sleep(0.1)

    def cluster_size(self, i: int) -> int:
        return int(self.status(i, "wsrep_cluster_size") or 0)


@pytest.fixture(scope="module")
def galera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaleraCluster]:
    """A running three-node Galera cluster for one test module (starting one takes seconds);
    always stopped at the module's end. Tests that kill nodes come last in their module."""
    reason = missing()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " (mandatory in CI)")
        pytest.skip(reason)
    cluster = GaleraCluster(tmp_path_factory.mktemp("galera"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
