"""The Dockerfile, without a Docker engine: linted by hadolint, and its steps replayed on the host.

The test reads the Dockerfile itself, so it fails when the file and reality drift: the build
stage's COPY lines fill a build context (checked against .dockerignore), its ``python -m venv`` and
``pip install`` lines run as written into a fresh virtual environment (the host's pip and its
cache, through ``pip --python``), and the final stage's ENV, ENTRYPOINT and CMD start the service
(under tini, as in the image) on SQLite, which must become ready and take a task.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import IN_CI
from packaging.requirements import Requirement
from servers import free_port, wait_ready
from test_worker_harness import events, kill_group, wait_for, write_worker, write_worker_config

from perfectqueue.service.security import hash_key, new_key

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "service.lock"


@dataclass
class Stage:
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.steps if name == instruction]


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: each FROM and its instructions (continuations joined)."""
    lines, current = [], ""
    for raw in text.splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current)
        current = ""
    stages: list[Stage] = []
    for line in lines:
        name, _, args = line.strip().partition(" ")
        if name.upper() == "FROM":
            stages.append(Stage(args.strip()))
        elif stages:
            stages[-1].steps.append((name.upper(), " ".join(args.split())))
    return stages


STAGES = parse(DOCKERFILE.read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def tool(name: str) -> str:
    """A program on PATH (or next to this Python), or a skip outside CI (a failure under CI=true)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return found


def test_hadolint_passes_and_would_catch_a_problem(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\nCMD python -m http.server\n")
    result = subprocess.run([hadolint, str(bad)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_the_image_is_multi_stage_non_root_with_tini_as_pid_1() -> None:
    assert len(STAGES) >= 2
    assert all("-slim" in stage.base for stage in STAGES)
    [user] = FINAL.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric: Kubernetes' runAsNonRoot can check it
    [entrypoint] = FINAL.all("ENTRYPOINT")
    assert json.loads(entrypoint)[:2] == ["tini", "--"]  # exec form, tini first
    assert all(not cmd.startswith("[") or json.loads(cmd) for cmd in FINAL.all("CMD"))
    # The dependencies are installed before the source is copied: source changes keep that layer.
    steps = [f"{name} {args}" for name, args in BUILD.steps]
    lock_install = next(i for i, s in enumerate(steps) if "-r requirements/service.lock" in s)
    first_source = next(i for i, s in enumerate(steps) if s.startswith("COPY src/"))
    assert lock_install < first_source


def test_tini_is_pinned_to_the_version_the_base_release_ships() -> None:
    """The pinned Debian version must exist, or `docker build` fails: compared with the host's
    tini when the host runs the same Debian release as the base image."""
    [pin] = [a.split("=", 1)[1] for a in FINAL.all("ARG") if a.startswith("TINI_VERSION=")]
    codename = re.search(r"-slim-(\w+)", FINAL.base)
    assert codename is not None
    release = Path("/etc/os-release")
    host = release.read_text() if release.exists() else ""
    if f"VERSION_CODENAME={codename.group(1)}" not in host:
        pytest.skip(f"the host is not Debian {codename.group(1)}")
    tool("tini")
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "tini"], check=False, capture_output=True, text=True, timeout=30
    ).stdout
    assert installed == pin


def test_the_lock_pins_every_dependency_with_hashes_and_names_no_index() -> None:
    text = LOCK.read_text()
    assert not re.search(r"--(extra-)?index-url|--find-links|://", text)
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)(?: ;[^\\\n]*)? \\$", text, re.MULTILINE))
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["service"]
    wanted += project["optional-dependencies"].get("metrics", [])
    for spec in map(Requirement, wanted):
        name = re.sub(r"[-_.]+", "-", spec.name).lower()
        assert name in pins, f"{name} is not in {LOCK.name}: regenerate it (see its first lines)"
        assert spec.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {spec}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes):
            excluded = not negate
    return excluded


def build_context(ctx: Path) -> None:
    """The build stage's COPY lines into ``ctx`` (its WORKDIR), leaving out what .dockerignore does."""
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert dockerignored("service/__pycache__/app.cpython-311.pyc", ignore)
    assert dockerignored(".venv/bin/python", ignore)
    for args in BUILD.all("COPY"):
        *sources, dest = shlex.split(args)
        for source in sources:
            assert not dockerignored(source.rstrip("/"), ignore), f".dockerignore leaves out {source}"
            path = ROOT / source
            if path.is_dir():
                copy_tree(path, ctx / dest, ignore)
            else:
                target = ctx / dest / path.name if dest.endswith("/") else ctx / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def copy_tree(source: Path, target: Path, ignore: list[str]) -> None:
    """As COPY does: files that .dockerignore leaves in, symlinks as symlinks."""
    for folder, dirs, files in os.walk(source):
        here = Path(folder)
        (target / here.relative_to(source)).mkdir(parents=True, exist_ok=True)
        for name in [*dirs, *files]:
            path = here / name
            if dockerignored(str(path.relative_to(ROOT)), ignore):
                if name in dirs:
                    dirs.remove(name)
                continue
            copied = target / path.relative_to(source)
            if path.is_symlink():
                copied.symlink_to(os.readlink(path))
            elif path.is_file():
                shutil.copy2(path, copied)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The image's steps replayed on the host: its virtual environment's path, by the image's."""
    root = tmp_path_factory.mktemp("image")
    ctx, venv = root / "build", root / "venv"
    ctx.mkdir()
    build_context(ctx)
    image_venv = None
    for args in BUILD.all("RUN"):
        command = shlex.split(args)
        if command[:3] == ["python", "-m", "venv"]:
            image_venv = command[3]
            # --without-pip: the host's pip installs into it (--python), with the host's cache.
            run([sys.executable, "-m", "venv", "--without-pip", str(venv)], ctx)
        elif command[:2] == ["pip", "install"]:
            run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *command[1:]], ctx)
        else:
            pytest.fail(f"the test does not know how to replay: RUN {args}")
    assert image_venv is not None
    return {image_venv: str(venv)}


def run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout}\n{result.stderr}"


def container(paths: dict[str, str], home: Path, **env: str) -> tuple[list[str], list[str], dict[str, str]]:
    """The final stage's entrypoint, command and environment (the image's paths mapped to the host's)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTQUEUE_")}
    for key, value in env_of(FINAL).items():
        mapped = value.replace("$PATH", os.environ["PATH"])
        for image_path, host_path in paths.items():
            mapped = mapped.replace(image_path, host_path)
        environ[key] = mapped
    environ.update(env, TINI_SUBREAPER="1", HOME=str(home))
    [entrypoint], [cmd] = FINAL.all("ENTRYPOINT"), FINAL.all("CMD")
    program, *arguments = json.loads(entrypoint)
    return [tool(program), *arguments], json.loads(cmd), environ


def test_the_image_refuses_to_serve_without_keys(image: dict[str, str], tmp_path: Path) -> None:
    entrypoint, cmd, env = container(image, tmp_path, PERFECTQUEUE_URL=f"sqlite:///{tmp_path}/q.sqlite3")
    result = subprocess.run(
        [*entrypoint, *cmd], env=env, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "api_keys" in result.stderr


def test_the_image_runs_init(image: dict[str, str], tmp_path: Path) -> None:
    entrypoint, _, env = container(image, tmp_path, PERFECTQUEUE_URL=f"sqlite:///{tmp_path}/q.sqlite3")
    for args in (["init"], ["run", "--help"]):
        result = subprocess.run(
            [*entrypoint, *args],
            env=env,
            cwd=tmp_path,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "q.sqlite3").exists()


def test_the_image_serves_and_runs_a_worker_both_stopping_on_sigterm(
    image: dict[str, str], tmp_path: Path
) -> None:
    key, port = new_key(), free_port()
    keys = [{"name": "test", "hash": hash_key(key), "scopes": ["submit", "work", "admin"]}]
    entrypoint, cmd, env = container(
        image,
        tmp_path,
        PERFECTQUEUE_URL=f"sqlite:///{tmp_path}/q.sqlite3",
        PERFECTQUEUE_API_KEYS=json.dumps(keys),
        PERFECTQUEUE_PORT=str(port),
    )
    assert env["PERFECTQUEUE_HOST"] == "0.0.0.0"  # the image's: the keys are what let it start
    proc = subprocess.Popen(
        [*entrypoint, *cmd], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc)
        auth = {"Authorization": f"Bearer {key}"}
        queue = f"{base}/v1/queues/default"
        submit = {"id": "image-1", "type": "hello", "data": {"n": 1}}
        assert httpx.post(f"{queue}/submit", json=submit, headers=auth, timeout=10).status_code == 201
        task = httpx.get(f"{queue}/tasks/image-1", headers=auth, timeout=10)
        assert task.status_code == 200
        assert task.json()["data"] == {"n": 1}
        assert httpx.get(f"{queue}/tasks/image-1", timeout=10).status_code == 401
        service_only = ("PERFECTQUEUE_URL", "PERFECTQUEUE_API_KEYS", "PERFECTQUEUE_PORT")
        worker_env = {k: v for k, v in env.items() if k not in service_only}  # a container of its own
        run_a_worker(entrypoint, worker_env, tmp_path, base, key)
        proc.send_signal(signal.SIGTERM)  # to tini, which passes it on
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_a_worker(entrypoint: list[str], env: dict[str, str], tmp_path: Path, base: str, key: str) -> None:
    """The image's entrypoint with ``run``: a task is done, and TERM (through tini) stops it cleanly."""
    write_worker(tmp_path)
    config = write_worker_config(tmp_path / "worker.yml", base, queue="default", token=key)
    command = [*entrypoint, "run", "pqworker:Dispatcher", "-I", str(tmp_path), "-c", str(config)]
    worker = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        ledger = tmp_path / "ledger"
        task = {"id": "image-2", "type": "quick", "data": {"ledger": str(ledger)}}
        auth = {"Authorization": f"Bearer {key}"}
        assert (
            httpx.post(f"{base}/v1/queues/default/submit", json=task, headers=auth, timeout=10).status_code
            == 201
        )
        wait_for(lambda: events(ledger, "end", "image-2"), what="the worker to run the task")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        kill_group(worker.pid)
        worker.wait()
