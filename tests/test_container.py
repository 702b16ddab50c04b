"""The image and the compose stack, proved with real tools.

Engine tests build each variant's image with Docker or Podman (tests/containers.py), run the
migrations and the app from it against the host's real PostgreSQL/MariaDB, and inspect the
image's filesystem. Stand-in base images are built on demand where the official ones cannot be
pulled (Debian forky's Python 3.14 and 3.15). Every variant runs on the default Python (3.14); the
newest (3.15) builds and runs the defaults and MariaDB variants.
hadolint runs over the Dockerfiles of many answer combinations; needs no engine. With Docker,
`docker compose up` runs a SQLite stack for real (the other stacks: tests/test_compose_stacks.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, UV, filled_env, need, render_template, run
from containers import Engine, base_image, derive, detect_engine, ensure_base_images, wanted_engines
from deploy_checks import compose_config, context_module

PYTHON = derive({})["python"]["version"]  # the template's default Python (3.14)
NEWEST = context_module().PYTHON_VERSIONS[-1]  # the newest Python the question offers (3.15)
CONTAINER = pytest.mark.xdist_group("container")

# The defaults (uvicorn, PostgreSQL), every other server x database pair, and a worker.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "uvicorn-mysql": {"database": "mysql"},
    "uvicorn-sqlite": {"database": "sqlite"},
    "uvicorn-none": {"database": "none"},
    "gunicorn-postgresql": {"server": "gunicorn"},
    "gunicorn-mysql": {"server": "gunicorn", "database": "mysql"},
    "gunicorn-sqlite": {"server": "gunicorn", "database": "sqlite"},
    "gunicorn-none": {"server": "gunicorn", "database": "none"},
    "uvicorn-workers-postgresql": {"server": "uvicorn-workers"},
    "arq-worker": {"database": "none", "redis": True, "worker": "arq"},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# FD_ENGINES="podman docker" runs every image test under each engine (CI); by default the first found.
ENGINES = wanted_engines() or ["none found"]


@pytest.fixture(scope="session", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    name = request.param
    found = None if name == "none found" else detect_engine(name)
    need(
        found is not None,
        f"container engine {name}: set FD_ENGINES to docker or podman that works here"
        " (Docker: `docker info` answers and the client has buildx or is older than 23; FD_DOCKER names"
        " the client; Podman: `podman info` answers)",
    )
    assert found is not None
    return found


@pytest.fixture(scope="session")
def base_images(engine: Engine) -> dict[str, str]:
    return ensure_base_images(engine, PYTHON, derive({})["uv_version"])


class Built:
    """A rendered project (with uv.lock, a secret .env and a .git) and its image."""

    def __init__(self, name: str, answers: dict[str, Any], path: Path, tag: str, log: str) -> None:
        self.name, self.answers, self.path, self.tag, self.log = name, answers, path, tag, log
        # The values the template derived, from the answers Copier recorded (defaults included).
        self.context = derive(yaml.safe_load((path / ".copier-answers.yml").read_text()))
        self.secret = ""
        # Where the server listens by default: "::" is IPv6 only (asyncio sets IPV6_V6ONLY).
        self.loopback = "::1" if ":" in self.context["bind_host"] else "127.0.0.1"

    def url(self, port: int) -> str:
        host = f"[{self.loopback}]" if ":" in self.loopback else self.loopback
        return f"http://{host}:{port}"


_PROJECTS: dict[str, tuple[Path, str]] = {}  # variant -> (rendered project, its SECRET_KEY)
_BUILT: dict[tuple[str, str], Built] = {}  # (engine, variant) -> image


def prepare_project(template_src: Path, dest: Path, answers: dict[str, Any]) -> Path:
    """Render with the post-generation tasks, as a user gets the project: uv.lock, a .env with
    fresh secrets, a .venv and a first git commit, all of which sit in the build context."""
    render_template(template_src, dest, tasks=True, **{"python_version": PYTHON, **answers})
    if not (dest / "uv.lock").exists():  # the lock task reports failures without stopping
        run([UV, "lock", "--quiet"], cwd=dest, timeout=300)
    if not (dest / ".git").exists():
        run(["git", "init", "-q"], cwd=dest, env=dict(os.environ))
    return dest


def env_secret(project: Path) -> str:
    """SECRET_KEY of the project's .env (written by the secrets task; added here if it is not)."""
    env = project / ".env"
    text = env.read_text() if env.exists() else ""
    for line in text.splitlines():
        if line.startswith("SECRET_KEY=") and "_your_" not in line:
            return line.split("=", 1)[1]
    secret = secrets.token_urlsafe(32)
    env.write_text(text + f"\nSECRET_KEY={secret}\n")
    return secret


def build_args(python: str = PYTHON) -> dict[str, str]:
    return {"PYTHON_VERSION": python}


@pytest.fixture(scope="session")
def built(
    engine: Engine, base_images: dict[str, str], template_src: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Built]:
    def _built(name: str, python: str = PYTHON) -> Built:
        answers = {"project_name": f"Box {name}", **VARIANTS[name], "python_version": python}
        variant = name if python == PYTHON else f"{name}-py{python.replace('.', '')}"
        if variant not in _PROJECTS:  # rendered once, built by each engine
            dest = prepare_project(template_src, tmp_path_factory.mktemp("image") / f"box-{variant}", answers)
            _PROJECTS[variant] = (dest, env_secret(dest))
        key = (engine.name, variant)
        if key not in _BUILT:
            if python != PYTHON:
                ensure_base_images(engine, python, derive({})["uv_version"])
            dest, secret = _PROJECTS[variant]
            # One tag per variant and xdist worker, kept after the run: removing images would also
            # drop build cache that a parallel worker (or the next run) is about to reuse.
            tag = f"localhost/fd-test-{variant}:{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
            log = engine.build(dest, tag, build_args(python))
            _BUILT[key] = Built(name, answers, dest, tag, log)
            _BUILT[key].secret = secret
        return _BUILT[key]

    return _built


@pytest.fixture
def containers(engine: Engine) -> Iterator[Callable[..., str]]:
    """start(image, *cmd, env=..., name=...) -> container name; every one is removed afterwards."""
    names: list[str] = []

    def start(image: str, *cmd: str, env: dict[str, str] | None = None, extra: list[str] | None = None) -> str:
        name = f"fd-test-{uuid.uuid4().hex[:10]}"
        args = [*engine.run_args(), "-d", "--name", name, *(extra or [])]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        names.append(name)
        engine.run(*args, image, *cmd)
        return name

    yield start
    engine.remove(*names)


def read_only_flags(engine: Engine) -> list[str]:
    """A read-only root filesystem with only /tmp writable, as compose runs it."""
    flags = ["--read-only", "--tmpfs", "/tmp"]
    if engine.name == "podman":
        flags.append("--read-only-tmpfs=false")  # podman otherwise adds writable /run and /var/tmp
    if engine.name == "docker":
        flags.append("--health-interval=1s")  # the image's HEALTHCHECK, checked sooner
    return flags


def wait_until_serving(engine: Engine, name: str, url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            state = engine.inspect(name, "{{.State.Status}}")
            if state not in ("running", "created", "configured"):
                logs = engine.run("logs", name, check=False)
                raise AssertionError(f"container {name} is {state}:\n{logs.stdout}{logs.stderr}") from None
            time.sleep(0.2)
    logs = engine.run("logs", name, check=False)
    raise AssertionError(f"{url} did not answer within {timeout}s:\n{logs.stdout}{logs.stderr}")


def healthcheck_status(engine: Engine, name: str, timeout: float = 60) -> str:
    """Run the image's HEALTHCHECK (podman) or wait for Docker's verdict."""
    if engine.name == "podman":
        result = engine.run("healthcheck", "run", name, check=False)
        return "healthy" if result.returncode == 0 else f"unhealthy: {result.stdout}{result.stderr}"
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = engine.inspect(name, "{{.State.Health.Status}}")
        if status in ("healthy", "unhealthy"):
            return status
        time.sleep(0.5)
    return status


def database_urls(kind: str, fresh_database: Callable[[str], str], data: Path) -> tuple[str, str, list[str]]:
    """(working URL, unreachable URL, extra run flags) for the variant's database."""
    closed = _free_port()
    if kind == "postgresql":
        return fresh_database("postgresql"), f"postgresql://postgres@127.0.0.1:{closed}/nothing", []
    if kind == "mysql":
        return fresh_database("mysql"), f"mysql://root@127.0.0.1:{closed}/nothing", []
    # SQLite: the image's default DATABASE_URL under /data, on a volume the app user may write.
    data.mkdir(exist_ok=True)
    uid = derive({})["app_uid"]
    os.chown(data, uid, uid)
    return "", "sqlite:////nonexistent/folder/app.db", ["-v", f"{data}:/data"]


@CONTAINER
@pytest.mark.parametrize(
    ("variant", "python"),
    [(name, PYTHON) for name in VARIANTS if name != "arq-worker"] + [("defaults", NEWEST), ("uvicorn-mysql", NEWEST)],
)
def test_image_migrates_serves_read_only_as_non_root(
    variant: str,
    python: str,
    engine: Engine,
    built: Callable[..., Built],
    fresh_database: Callable[[str], str],  # before containers: torn down after them
    containers: Callable[..., str],
    tmp_path: Path,
) -> None:
    box = built(variant, python)
    # The image runs the Python the project was rendered for (the stand-in's python3 included).
    version = engine.run("run", "--rm", *engine.run_flags, box.tag, "python", "-c", "import sys; print(sys.version)")
    assert version.stdout.startswith(f"{python}."), version.stdout
    database = box.answers.get("database", "postgresql")
    env = {"ENVIRONMENT": "production", "SECRET_KEY": secrets.token_urlsafe(48), "READY_TIMEOUT": "2"}
    extra: list[str] = []
    unreachable = ""
    if database != "none":
        url, unreachable, extra = database_urls(database, fresh_database, tmp_path / "data")
        if url:
            env["DATABASE_URL"] = url
        # Migrations: the same image, another command, the database on the host.
        migrate = containers(box.tag, *box.context["migration_argv"], env=env, extra=extra)
        code = engine.run("wait", migrate, timeout=180).stdout.strip().splitlines()[-1]
        logs = engine.run("logs", migrate, check=False)
        assert code == "0", f"migrations failed:\n{logs.stdout}{logs.stderr}"

    port = _free_port()
    app = containers(box.tag, env={**env, "PORT": str(port)}, extra=[*extra, *read_only_flags(engine)])
    base = box.url(port)
    live = wait_until_serving(engine, app, base + box.context["health_live_path"])
    assert live.status_code == 200, live.text
    ready = httpx.get(base + box.context["health_ready_path"], timeout=10)
    assert ready.status_code == 200, ready.text
    if database != "none":
        created = httpx.post(base + "/items", json={"name": "boxed", "quantity": 3}, timeout=10)
        assert created.status_code == 201, created.text  # the migrated table exists
        fetched = httpx.get(f"{base}/items/{created.json()['id']}", timeout=10)
        assert fetched.json()["name"] == "boxed"

    # PID 1 is the server itself (serve.py execs it), running as the image's numeric non-root user.
    status = engine.run("exec", app, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(box.context["app_uid"])}, status
    cmdline = engine.run("exec", app, "cat", "/proc/1/cmdline").stdout.split("\0")
    server = box.answers.get("server", "uvicorn").split("-")[0]  # uvicorn-workers runs uvicorn
    assert server in Path(cmdline[1] if cmdline[0].endswith("python") else cmdline[0]).name + " ".join(cmdline)
    denied = engine.run("exec", app, "touch", "/app/written", check=False)
    assert denied.returncode != 0, "the root filesystem is writable"

    assert healthcheck_status(engine, app) == "healthy"

    if database != "none":
        # Same image, database unreachable: not ready (503) but alive (200).
        port2 = _free_port()
        env2 = {**env, "PORT": str(port2), "DATABASE_URL": unreachable}
        down = containers(box.tag, env=env2, extra=read_only_flags(engine))
        base2 = box.url(port2)
        assert wait_until_serving(engine, down, base2 + box.context["health_live_path"]).status_code == 200
        not_ready = httpx.get(base2 + box.context["health_ready_path"], timeout=15)
        assert not_ready.status_code == 503, not_ready.text
        assert "database" in not_ready.json()["checks"]


@CONTAINER
def test_beanstalk_leader_only_migration_runs_in_the_image(
    engine: Engine,
    built: Callable[[str], Built],
    fresh_database: Callable[[str], str],
    template_src: Path,
    tmp_path: Path,
) -> None:
    """The container command of deploy/aws_eb/.ebextensions/migrations.config, run for real: its
    `docker run` with every flag it passes, on the built image, the variables it forwards set as
    Elastic Beanstalk sets them, against a real PostgreSQL. Only the ECR login is left out (no
    registry here); where the command runs and how often is Elastic Beanstalk's part."""
    box = built("defaults")
    project = render_template(template_src, tmp_path / "eb", platforms=["aws_eb"], ci="none")
    config = yaml.safe_load((project / "deploy/aws_eb/.ebextensions/migrations.config").read_text())
    (command,) = config["container_commands"].values()
    docker_run = command["command"].split("&&")[-1].split()
    assert docker_run[:2] == ["docker", "run"], command["command"]
    args = [box.tag if a == '"$image"' else a for a in docker_run[2:]]
    assert box.tag in args
    forwarded = [value for flag, value in itertools.pairwise(args) if flag == "--env"]
    assert {"DATABASE_URL", "SECRET_KEY"} <= set(forwarded), forwarded
    variables = {"ENVIRONMENT": "staging", "LOG_LEVEL": "INFO", "SECRET_KEY": secrets.token_urlsafe(48)}
    variables["DATABASE_URL"] = fresh_database("postgresql")
    env = {**os.environ, **variables}
    result = subprocess.run(
        [*engine.exe, "run", *engine.run_flags, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    migration = box.context["migration_argv"]
    assert args[-len(migration) :] == migration
    check = [*args[: -len(migration)], "alembic", "current"]
    current = subprocess.run(
        [*engine.exe, "run", *engine.run_flags, *check], env=env, capture_output=True, text=True, timeout=300
    )
    assert current.returncode == 0 and "(head)" in current.stdout, current.stdout + current.stderr


@CONTAINER
def test_the_ci_smoke_step_starts_the_image_it_built(engine: Engine, built: Callable[[str], Built]) -> None:
    """The generated GitHub CI's smoke step, as rendered, run against the image built from the same
    project: the image runs as production, which refuses to start without a SECRET_KEY, so the step
    must hand it one. Only what this machine does differently is changed: the engine's own flags
    (host networking), a free port instead of the published one, and the test's image tag."""
    box = built("defaults")
    ci = yaml.safe_load((box.path / ".github/workflows/ci.yml").read_text())
    [script] = [
        step["run"]
        for job in ci["jobs"].values()
        for step in job.get("steps", [])
        if "docker run" in step.get("run", "") and "health-check.sh" in step["run"]
    ]
    port, name = _free_port(), f"fd-smoke-{uuid.uuid4().hex[:10]}"
    app_port, image = box.context["app_port"], f"{box.context['image_name']}:ci"
    for old, new in {
        f"-p {app_port}:{app_port}": f"-e PORT={port}",
        f"127.0.0.1:{app_port}": f"127.0.0.1:{port}",
        f" {image}": f" {box.tag}",
        " smoke": f" {name}",
    }.items():
        assert old in script, f"the smoke step no longer holds {old!r}:\n{script}"
        script = script.replace(old, new)
    client = " ".join(shlex.quote(a) for a in engine.exe)
    flags = " ".join(shlex.quote(a) for a in engine.run_flags)
    prelude = f'docker() {{ if [ "$1" = run ]; then shift; {client} run {flags} "$@"; else {client} "$@"; fi; }}\n'
    try:
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", prelude + script],
            cwd=box.path, capture_output=True, text=True, timeout=120, env=engine.env(),
        )  # fmt: skip
        assert result.returncode == 0, f"the smoke step failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
    finally:
        engine.remove(name)


def test_worker_and_redis_readiness_from_the_same_image(
    engine: Engine, built: Callable[[str], Built], containers: Callable[..., str], redis_url: str
) -> None:
    """The worker runs from the app's image (read-only, as compose runs it) and passes the health
    check compose gives it; the app's readiness includes Redis."""
    box = built("arq-worker")
    env = {"ENVIRONMENT": "production", "SECRET_KEY": secrets.token_urlsafe(48), "REDIS_URL": redis_url}
    worker = containers(box.tag, *box.context["worker_argv"], env=env, extra=read_only_flags(engine))
    compose = yaml.safe_load((box.path / "compose.yaml").read_text())
    check = compose["services"]["worker"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    deadline = time.monotonic() + 30
    while True:
        result = engine.run("exec", worker, *check[1:], check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    logs = engine.run("logs", worker, check=False)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{logs.stdout}{logs.stderr}"

    port = _free_port()
    app = containers(box.tag, env={**env, "PORT": str(port)}, extra=read_only_flags(engine))
    wait_until_serving(engine, app, box.url(port) + box.context["health_live_path"])
    ready = httpx.get(box.url(port) + box.context["health_ready_path"], timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text

    engine.run("kill", "--signal", "TERM", worker)
    assert engine.run("wait", worker, timeout=60).stdout.strip().splitlines()[-1] == "0"


def _image_members(engine: Engine, tag: str, secret: str) -> tuple[list[tarfile.TarInfo], list[str]]:
    """Every file of the image's filesystem (from `export`), and those whose content holds secret."""
    name = f"fd-test-{uuid.uuid4().hex[:10]}"
    engine.run("create", "--name", name, tag)
    try:
        proc = subprocess.Popen(engine.cmd("export", name), stdout=subprocess.PIPE)
        members: list[tarfile.TarInfo] = []
        leaking: list[str] = []
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                members.append(member)
                if member.isfile() and member.size < 5_000_000 and member.name.lstrip("./").startswith("app/"):
                    data = tar.extractfile(member)
                    if data is not None and secret.encode() in data.read():
                        leaking.append(member.name)
        assert proc.wait(timeout=120) == 0
    finally:
        engine.remove(name)
    return members, leaking


@CONTAINER
@pytest.mark.parametrize("variant", [name for name in VARIANTS if name != "arq-worker"])
def test_image_holds_only_what_runs(variant: str, engine: Engine, built: Callable[[str], Built]) -> None:
    box = built(variant)
    members, leaking = _image_members(engine, box.tag, box.secret)
    paths = {m.name.lstrip(".").lstrip("/"): m for m in members}
    assert "app/.venv/bin/python" in paths, sorted(paths)[:50]
    # No uv and no compiler: no such program in any bin folder.
    programs = {Path(p).name: p for p, m in paths.items() if Path(p).parent.name in ("bin", "sbin") and not m.isdir()}
    banned = {"uv", "uvx", "gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc", "x86_64-linux-gnu-gcc-12"}
    assert not set(programs) & banned, [programs[n] for n in set(programs) & banned]
    assert "python" in programs  # the listing is real: the interpreter is found the same way
    assert not [p for p in paths if Path(p).name.startswith(".env")], "a .env file is in the image"
    assert not [p for p in paths if ".git" in Path(p).parts], "VCS data is in the image"
    assert not leaking, f"the .env secret is in {leaking}"
    project_tests = {p.name for p in (box.path / "tests").glob("test_*.py")}
    assert project_tests
    assert not [p for p in paths if Path(p).name in project_tests or p.startswith("app/tests")]
    assert not [p for p in paths if p.startswith("app/src")], "sources left in the image"
    # Podman before 5.2 leaves the cache mount's empty mount point behind; nothing may be in it.
    cached = [p for p, m in paths.items() if p.startswith("root/.cache") and not m.isdir()]
    assert not cached, f"uv's cache is in the image: {cached[:5]}"
    # Everything under /app is root's and nobody else may write it.
    app_files = [m for m in members if m.name.lstrip("./").startswith("app/")]
    assert app_files
    assert {m.uid for m in app_files} == {0}
    assert not [m.name for m in app_files if m.mode & 0o022 and not m.issym()]
    # /app holds the venv, its lock file, the code and (with a database) the migrations: no more.
    top = {p.split("/")[1] for p in paths if p.startswith("app/") and p.split("/")[1]}
    expected = {".venv", "project", "uv.lock"}
    if derive(box.answers)["has_db"]:
        expected |= {"alembic.ini", "migrations"}
    assert top == expected


class SlowUpload(threading.Thread):
    """POST /items whose body trickles in: the request is accepted, then still in flight."""

    def __init__(self, host: str, port: int, index: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.seconds = host, port, seconds
        self.body = json.dumps({"name": f"slow-{index}", "quantity": index}).encode()
        self.headers_sent = threading.Event()
        self.status: int | None = None
        self.error: str | None = None
        self.body_done = 0.0  # when the last byte of the body was sent (monotonic)

    def run(self) -> None:
        try:
            with socket.create_connection((self.host, self.port), timeout=30) as sock:
                head = (
                    f"POST /items HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
                ).encode()
                sock.sendall(head + self.body[:2])
                self.headers_sent.set()
                rest = self.body[2:]
                step = max(1, len(rest) // 10)
                for start in range(0, len(rest), step):
                    time.sleep(self.seconds / 10)
                    sock.sendall(rest[start : start + step])
                self.body_done = time.monotonic()
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                self.status = int(answer.split(b" ", 2)[1]) if answer else None
        except OSError as exc:
            self.error = repr(exc)
        finally:
            self.headers_sent.set()


@CONTAINER
@pytest.mark.parametrize("variant", ["defaults", "gunicorn-mysql", "uvicorn-workers-postgresql"])
def test_sigterm_lets_accepted_requests_finish(
    variant: str,
    engine: Engine,
    built: Callable[[str], Built],
    fresh_database: Callable[[str], str],  # before containers: torn down after them
    containers: Callable[..., str],
) -> None:
    box = built(variant)
    database = box.answers.get("database", "postgresql")
    url = fresh_database(database)
    env = {"DATABASE_URL": url, "ENVIRONMENT": "production", "SECRET_KEY": secrets.token_urlsafe(48)}
    migrate = containers(box.tag, *box.context["migration_argv"], env=env)
    assert engine.run("wait", migrate, timeout=180).stdout.strip() == "0"

    port, graceful = _free_port(), 10
    app = containers(box.tag, env={**env, "PORT": str(port), "GRACEFUL_TIMEOUT": str(graceful)})
    base = box.url(port)
    wait_until_serving(engine, app, base + box.context["health_live_path"])
    # Warm every worker's pool so the uploads below are the only thing in flight.
    for _ in range(4):
        assert httpx.get(base + box.context["health_ready_path"], timeout=10).status_code == 200

    uploads = [SlowUpload(box.loopback, port, index, seconds=3) for index in range(8)]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        assert upload.headers_sent.wait(10)
    time.sleep(0.5)  # the server has parsed the headers: the requests are accepted and in flight
    signalled = time.monotonic()
    engine.run("kill", "--signal", "TERM", app)
    exit_code = engine.run("wait", app, timeout=graceful + 30).stdout.strip().splitlines()[-1]
    stopped_after = time.monotonic() - signalled
    for upload in uploads:
        upload.join(10)

    logs = engine.run("logs", app, check=False)
    assert [(u.status, u.error) for u in uploads] == [(201, None)] * len(uploads), logs.stderr[-3000:]
    assert exit_code == "0", logs.stderr[-3000:]
    # The requests were in flight when SIGTERM came: their bodies were still arriving.
    assert min(u.body_done for u in uploads) > signalled
    assert stopped_after < graceful, f"took {stopped_after:.1f}s to exit after SIGTERM"
    # Every slow upload was stored: the work was done, not just answered.
    listed = run(
        [
            *engine.cmd(*engine.run_args(), "--rm", "-e", f"DATABASE_URL={url}"),
            box.tag,
            *("python", "-c", _COUNT_ITEMS.format(package=box.path.name.replace("-", "_"))),
        ],
        env=dict(os.environ),
    )
    assert listed.stdout.strip() == str(len(uploads))


_COUNT_ITEMS = """
import asyncio
from sqlalchemy import text
from {package}.db import create_engine
from {package}.settings import DatabaseSettings
async def main():
    engine = create_engine(DatabaseSettings().database_url.get_secret_value())
    async with engine.connect() as c:
        print((await c.execute(text("SELECT COUNT(*) FROM items WHERE name LIKE 'slow-%'"))).scalar())
    await engine.dispose()
asyncio.run(main())
"""


@CONTAINER
def test_code_only_change_reuses_the_dependency_layer(
    engine: Engine, built: Callable[[str], Built], tmp_path: Path
) -> None:
    box = built("defaults")
    changed = tmp_path / box.path.name
    shutil.copytree(box.path, changed, symlinks=True)
    package = box.path.name.replace("-", "_")
    marker = f"CODE_CHANGE_{uuid.uuid4().hex[:8]}"
    main = changed / "src" / package / "main.py"
    main.write_text(main.read_text() + f"\n{marker} = True\n")

    new_tag = f"{box.tag}-changed"
    try:
        engine.build(box.path, box.tag, build_args())  # from the cache: the state to change from
        log = engine.build(changed, new_tag, build_args())
        # uv installed the project alone: the dependency layer came from the cache.
        assert re.findall(r"Installed \d+ packages?", log) == ["Installed 1 package"], log[-3000:]
        layers = [json.loads(engine.inspect(t, "{{json .RootFS.Layers}}", kind="image")) for t in (box.tag, new_tag)]
        base_layers = json.loads(engine.inspect(base_image(PYTHON), "{{json .RootFS.Layers}}", kind="image"))
        # The image differs from the previous one by its last layer only (the project's code):
        # the venv layer, the biggest, is the same and is neither rebuilt nor pushed again.
        assert len(layers[0]) == len(layers[1]) > len(base_layers) + 1
        differing = [i for i, (old, new) in enumerate(zip(*layers, strict=True)) if old != new]
        assert differing == [len(layers[0]) - 1], differing
        found = run(
            [
                *engine.cmd("run", "--rm", *engine.run_flags, new_tag),
                *("python", "-c", f"import {package}.main as m; print(m.{marker})"),
            ],
            env=dict(os.environ),
        )
        assert found.stdout.strip() == "True"
    finally:
        subprocess.run(engine.cmd("rmi", "-f", new_tag), capture_output=True, timeout=120)


@CONTAINER
def test_lock_change_rebuilds_the_dependency_layer(
    engine: Engine, built: Callable[[str], Built], tmp_path: Path
) -> None:
    """A new dependency reaches the image on every builder, Podman before 5.2 included (its
    Buildah leaves bind-mounted files out of the cache key, so the lock file is copied)."""
    box = built("defaults")
    changed = tmp_path / box.path.name
    shutil.copytree(box.path, changed, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    pyproject = changed / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace("dependencies = [\n", 'dependencies = [\n    "six>=1.16",\n', 1))
    assert pyproject.read_text() != text
    run([UV, "lock", "--quiet"], cwd=changed, timeout=300)

    new_tag = f"{box.tag}-lock"
    try:
        engine.build(box.path, box.tag, build_args())  # from the cache: the state to change from
        engine.build(changed, new_tag, build_args())
        found = run(
            [*engine.cmd("run", "--rm", *engine.run_flags, new_tag), "python", "-c", "import six; print(six.__name__)"],
            env=dict(os.environ),
        )
        assert found.stdout.strip() == "six"
    finally:
        subprocess.run(engine.cmd("rmi", "-f", new_tag), capture_output=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# No engine needed: hadolint and compose validation over many answer combinations
# ---------------------------------------------------------------------------------------------
EXTRA_COMBINATIONS: list[dict[str, Any]] = [
    *(
        {"server": s, "database": d}
        for s in ("uvicorn", "gunicorn", "uvicorn-workers")
        for d in ("postgresql", "mysql", "sqlite", "none")
    ),
    {"python_version": "3.13", "license": "proprietary", "redis": True, "worker": "celery"},
    {"reverse_proxy": "nginx", "domain": "api.example.com", "redis": True, "worker": "arq", "database": "mysql"},
    {"reverse_proxy": "traefik", "domain": "api.example.com", "database": "sqlite", "platforms": ["vm"]},
    {"reverse_proxy": "nginx", "database": "none"},
    {
        "project_name": 'Quote "$HOME" \\ Service',
        "project_slug": "quote-service",
        "description": 'Says "hi" for $5 \\o/',
        "author_name": "O'Brien $USER",
        "platforms": ["vm"],
        "database": "sqlite",
        "reverse_proxy": "traefik",
    },
]


@pytest.fixture(scope="session")
def combinations(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, Any], Path]]:
    """Projects rendered for the pairwise answer sets and the cases above (rendered once)."""
    from combinations import pairwise, to_answers

    answer_sets = [to_answers(row) for row in pairwise()] + EXTRA_COMBINATIONS
    folder = tmp_path_factory.mktemp("combinations")
    return [
        (answers, render_template(template_src, folder / f"p{i}", **answers)) for i, answers in enumerate(answer_sets)
    ]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(ROOT / ".venv" / "bin")) or shutil.which(name)
    need(found is not None, f"{name} not installed: uv sync the template's dev group")
    assert found is not None
    return found


def test_hadolint_reports_nothing_for_every_combination(combinations: list[tuple[dict[str, Any], Path]]) -> None:
    hadolint = _tool("hadolint")
    failures = []
    for answers, project in combinations:
        text = (project / "Dockerfile").read_text()
        assert "{{" not in text and "{%" not in text, answers
        result = run([hadolint, "--failure-threshold", "info", str(project / "Dockerfile")], check=False)
        if result.returncode != 0:
            failures.append(f"{answers}:\n{result.stdout}{result.stderr}")
        # An ignore only with a comment saying why (none is needed today).
        for line in text.splitlines():
            assert "hadolint ignore" not in line or "because" in line, line
    assert not failures, "\n".join(failures)
    assert len(combinations) >= 30


def _compose_files(project: Path) -> list[Path]:
    return [project / "compose.yaml", project / "compose.override.yaml"]


def test_compose_files_pass_the_compose_spec_and_compose_config(
    combinations: list[tuple[dict[str, Any], Path]],
) -> None:
    """Both files of every combination: the compose-spec schema (all errors at once) and Compose itself."""
    check = _tool("check-jsonschema")
    compose = _tool("docker-compose")
    files = [str(f) for _, project in combinations for f in _compose_files(project)]
    result = run([check, "--builtin-schema", "vendor.compose-spec", *files], check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    for answers, project in combinations:
        for stack in (["-f", "compose.yaml"], ["-f", "compose.yaml", "-f", "compose.override.yaml"]):
            checked = run([compose, *stack, "config", "-q", "--no-interpolate"], cwd=project, check=False)
            assert checked.returncode == 0, f"{answers} {stack}: {checked.stderr}"
            assert "{{" not in (project / "compose.yaml").read_text()
        docs = (project / "docs" / "container.md").read_text()
        assert "{{" not in docs and "{%" not in docs and project.joinpath(".dockerignore").exists()


def test_compose_stack_is_hardened_and_ordered(combinations: list[tuple[dict[str, Any], Path]], tmp_path: Path) -> None:
    """With a filled .env, Compose's own view of the stack: hardening, migrations first, health, volumes."""
    checked = 0
    for answers, rendered in combinations:
        project = tmp_path / f"c{checked}"
        shutil.copytree(rendered, project)
        (project / ".env").write_text(filled_env(project))
        for variable, folder in (("TLS_CERTS_DIR", "deploy/proxy/certs"), ("ACME_WEBROOT", "deploy/proxy/acme")):
            if f"{variable}=./{folder}" in (project / ".env").read_text():
                (project / folder).mkdir(parents=True)  # as docs/deploy/vm.md has the user do
        values = derive(yaml.safe_load((project / ".copier-answers.yml").read_text()))
        config = compose_config(project, ["compose.yaml"])
        services = config["services"]
        app = services["app"]
        assert app["read_only"] is True and app["cap_drop"] == ["ALL"], answers
        assert "no-new-privileges:true" in app["security_opt"]
        assert "/tmp" in app["tmpfs"]
        grace = int(app["environment"]["GRACEFUL_TIMEOUT"])
        stop = app["stop_grace_period"]
        assert stop.endswith("s") and int(stop[:-1]) == values["kill_timeout"] > grace, (stop, grace)
        # The password in DATABASE_URL is the one the database container is given.
        if values["has_db"]:
            migrate = services["migrate"]
            assert migrate["command"] == values["migration_argv"]
            assert migrate["image"] == app["image"]
            assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert migrate["read_only"] is True
        else:
            assert "migrate" not in services and "db" not in services
        if values["db_is_server"]:
            db = services["db"]
            assert db["image"] == values["db_image"] and db["healthcheck"]["test"]
            assert any(v["type"] == "volume" for v in db["volumes"])
            assert app["depends_on"]["db"]["condition"] == "service_healthy"
            password = next(v for k, v in db["environment"].items() if k.endswith("_PASSWORD") and "ROOT" not in k)
            assert f":{password}@db:" in app["environment"]["DATABASE_URL"]
        if answers.get("database") == "sqlite":
            assert [v for v in app["volumes"] if v["type"] == "volume" and v["target"] == "/data"]
        if values["uses_redis"]:
            assert services["redis"]["image"] == values["redis_image"]
            assert services["redis"]["healthcheck"]["test"] and app["environment"]["REDIS_URL"].startswith(
                "redis://redis"
            )
        if values["has_worker"]:
            assert services["worker"]["command"] == values["worker_argv"]
            assert services["worker"]["read_only"] is True
        proxy = answers.get("reverse_proxy", "none")
        if proxy == "none":
            assert "proxy" not in services
        else:
            mounts = [v for v in services["proxy"]["volumes"] if v["type"] == "bind"]
            assert mounts and all(Path(v["source"]).exists() for v in mounts), mounts
            published = {str(p["published"]) for p in services["proxy"]["ports"]}
            assert ("443" in published) == bool(answers.get("domain")), published
            text = "\n".join(Path(v["source"]).read_text() for v in mounts if Path(v["source"]).is_file())
            assert f"app:{values['app_port']}" in text
            if answers.get("domain"):
                assert answers["domain"] in text
            if proxy == "nginx" and answers.get("domain"):
                # certbot's webroot: the folder nginx.conf serves challenges from, mounted read-only.
                webroot = re.search(r"location /\.well-known/acme-challenge/ \{\s*root ([^;]+);", text)
                assert webroot, text
                assert any(v["target"] == webroot.group(1) and v["read_only"] for v in mounts), mounts
        # Development: reload, sources mounted.
        dev = compose_config(project, ["compose.yaml", "compose.override.yaml"])["services"]["app"]
        assert "--reload" in dev["command"] and any(v["target"] == "/app/src" for v in dev["volumes"])
        checked += 1
        if checked >= 12:
            break
    assert checked == 12


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60, poll: float = 0.3) -> float:
    """Call check() until it holds (a refused or reset connection counts as not yet); return the
    seconds it took, or fail naming what did not happen within timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, httpx.TransportError):
            pass
        time.sleep(poll)
    raise AssertionError(f"{what} within {timeout}s")


REGISTRY = Path("/usr/bin/docker-registry")


@contextlib.contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """Debian's docker-registry (the Distribution registry) on 127.0.0.1:<free port>, without auth,
    its data and log (registry.log: one line per request) in root; yields "127.0.0.1:<port>".
    Docker engines and buildx reach a loopback registry over plain HTTP without being told to.
    Skips with the reason where the package is missing."""
    need(REGISTRY.exists(), "Debian's docker-registry (/usr/bin/docker-registry) for a registry at 127.0.0.1")
    port = _free_port()
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    with (root / "registry.log").open("wb") as log:
        process = subprocess.Popen([str(REGISTRY), "serve", str(root / "config.yml")],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200,
                       "the registry answering")  # fmt: skip
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def docker_with_base_images(purpose: str) -> Engine:
    """The Docker engine (FD_DOCKER) with the stand-in base images in place, or a visible skip
    naming what it was wanted for."""
    found = detect_engine("docker")
    need(found is not None, f"a Docker engine whose client builds with BuildKit (FD_DOCKER), for {purpose}")
    assert found is not None
    ensure_base_images(found, PYTHON, derive({})["uv_version"])
    return found


def assert_migrated_then_hardened(docker: Engine, migrate: str, app: str, uid: int) -> None:
    """The compose promises for a running stack: migrate exited 0 before the app started, and the
    app runs read-only with /tmp in memory, no capabilities (none held by its process either),
    no-new-privileges and the image's non-root UID."""
    assert docker.inspect(migrate, "{{.State.ExitCode}}") == "0"
    finished = docker.inspect(migrate, "{{.State.FinishedAt}}")
    started = docker.inspect(app, "{{.State.StartedAt}}")
    assert finished <= started, f"the app started ({started}) before migrate finished ({finished})"
    host = json.loads(docker.inspect(app, "{{json .HostConfig}}"))
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert docker.run("exec", app, "id", "-u").stdout.strip() == str(uid)
    caps = docker.run("exec", app, "grep", "^CapEff", "/proc/1/status").stdout.split()[-1]
    assert int(caps, 16) == 0, f"the app's process holds capabilities {caps}"


@CONTAINER
@pytest.mark.container  # finds Docker itself rather than through the engine fixture
def test_compose_up_runs_the_stack_in_order_hardened_and_reloading_in_development(
    template_src: Path, tmp_path: Path
) -> None:
    """A real `docker compose up` of a stack that needs no registry image (SQLite, no Redis, no proxy):
    migrate runs to completion before the app starts, the app is hardened as compose.yaml says, data
    survives `down`/`up` in the named volume, and the development override reloads changed code."""
    docker = detect_engine("docker")
    need(
        docker is not None,
        "a Docker engine whose client builds with BuildKit (FD_DOCKER), for a real `docker compose up`",
    )
    assert docker is not None
    ensure_base_images(docker, PYTHON, derive({})["uv_version"])
    project = prepare_project(template_src, tmp_path / "stack", {"project_name": "Stack Check", "database": "sqlite"})
    env_secret(project)  # SECRET_KEY in .env, which compose reads for ${SECRET_KEY:?...}
    image, image_tag = "localhost/fd-test-compose-stack", os.environ.get("PYTEST_XDIST_WORKER", "main")
    docker.build(project, f"{image}:{image_tag}", build_args())
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    context = derive(answers)
    port, name = _free_port(), f"fd-stack-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "IMAGE": image, "IMAGE_TAG": image_tag, "APP_PORT": str(port)}
    production, development = ["-p", name, "-f", "compose.yaml"], ["-p", name]  # the override merges itself
    url = f"http://127.0.0.1:{port}"

    def compose(*args: str) -> None:
        run([_tool("docker-compose"), *args], cwd=project, env=env, timeout=180)

    def ready() -> bool:
        return httpx.get(url + context["health_ready_path"], timeout=2).status_code == 200

    try:
        compose(*production, "up", "-d", "--no-build")
        wait_until(ready, "the production-like stack did not answer ready")
        assert_migrated_then_hardened(docker, f"{name}-migrate-1", f"{name}-app-1", context["app_uid"])
        created = httpx.post(url + "/items", json={"name": "kept across down and up"}, timeout=5)
        assert created.status_code == 201, created.text

        compose(*production, "down", "-t", "5")  # containers go, the volume stays
        compose(*production, "up", "-d", "--no-build")
        wait_until(ready, "the stack did not answer ready after down and up")
        names = [item["name"] for item in httpx.get(url + "/items", timeout=5).json()["items"]]
        assert "kept across down and up" in names
        compose(*production, "down", "-t", "5")

        compose(*development, "up", "-d", "--no-build")
        wait_until(ready, "the development stack did not answer ready")
        assert httpx.get(url + "/openapi.json", timeout=5).json()["info"]["title"] == "Stack Check"
        main_py = project / "src" / answers["package_name"] / "main.py"
        main_py.write_text(main_py.read_text().replace('title="Stack Check"', 'title="Stack Check, reloaded"'))
        wait_until(
            lambda: httpx.get(url + "/openapi.json", timeout=2).json()["info"]["title"] == "Stack Check, reloaded",
            "the development server did not reload the changed code",
        )
    finally:
        subprocess.run(
            [_tool("docker-compose"), *development, "down", "-v", "--remove-orphans", "-t", "5"],
            cwd=project, env=env, capture_output=True, timeout=120,
        )  # fmt: skip


def test_compose_stops_at_once_on_a_missing_required_value(render: Callable[..., Path]) -> None:
    project = render(database="postgresql")
    (project / ".env").write_text(filled_env(project).replace("SECRET_KEY=", "NOT_THE_SECRET_KEY="))
    compose = _tool("docker-compose")
    result = run([compose, "-f", "compose.yaml", "config", "-q"], cwd=project, check=False)
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr, result.stderr


def test_compose_files_hold_no_secrets(combinations: list[tuple[dict[str, Any], Path]]) -> None:
    detect = _tool("detect-secrets")
    files = [str(f) for _, project in combinations[:10] for f in _compose_files(project)]
    files += [str(f) for _, project in combinations for f in (project / "deploy").glob("proxy/*")]
    result = run([detect, "scan", "--no-verify", *files], cwd=ROOT)
    findings = json.loads(result.stdout)["results"]
    assert findings == {}, findings


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    """The same call fails on a Dockerfile with a known problem (so a pass above means something)."""
    hadolint = shutil.which("hadolint", path=str(Path(ROOT / ".venv" / "bin"))) or shutil.which("hadolint")
    need(hadolint is not None, "hadolint not installed")
    assert hadolint is not None
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12-slim\nUSER appuser\nCMD python -m app\n")
    result = run([hadolint, "--failure-threshold", "info", str(bad)], check=False)
    assert result.returncode != 0 and "DL3025" in result.stdout + result.stderr


def test_label_values_survive_quotes_and_dollars(render: Callable[..., Path]) -> None:
    """The OCI labels carry the answers literally: parse the rendered LABEL with shell rules."""
    import shlex

    answers = {k: v for k, v in EXTRA_COMBINATIONS[-1].items() if k != "reverse_proxy"}
    text = (render(**answers) / "Dockerfile").read_text()
    label = text.split("FROM deps AS runtime", 1)[1].split("LABEL ", 1)[1].split("\n\n", 1)[0]
    words = shlex.split(label.replace("\\\n", " ").replace("\\$", "\\\\$"), posix=True)
    values = dict(word.split("=", 1) for word in words)
    # shlex turns the escaped \$ back into $; Docker does the same for LABEL values.
    assert values["org.opencontainers.image.title"].replace("\\$", "$") == answers["project_name"]
    assert values["org.opencontainers.image.description"].replace("\\$", "$") == answers["description"]


@CONTAINER
def test_dockerignore_keeps_secrets_vcs_caches_and_tests_out(
    engine: Engine, base_images: dict[str, str], render: Callable[..., Path], tmp_path: Path
) -> None:
    """Send a project full of things that must stay out as a build context, and list what arrived."""
    project = render(database="postgresql", python_version=PYTHON)
    package = next((project / "src").iterdir()).name
    unwanted = [
        ".env",
        ".env.production",
        f"src/{package}/.env",
        ".git/config",
        ".venv/bin/python",
        f"src/{package}/__pycache__/main.cpython-{PYTHON.replace('.', '')}.pyc",
        ".pytest_cache/v/x",
        "app.db",
        "tls.key",
        ".ruff_cache/x",
        "tests/test_health.py",
    ]
    for path in unwanted:
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text("x")
    lister = tmp_path / "List.Dockerfile"
    lister.write_text(f"FROM {base_image(PYTHON)}\nCOPY . /context\nRUN find /context -mindepth 1 > /listing\n")
    tag = f"localhost/fd-test-context:{uuid.uuid4().hex[:8]}"
    try:
        engine.build(project, tag, {}, "-f", str(lister))
        listing = engine.run("run", "--rm", *engine.run_flags, tag, "cat", "/listing").stdout.split()
    finally:
        subprocess.run(engine.cmd("rmi", "-f", tag), capture_output=True, timeout=60)
    arrived = {line.removeprefix("/context/") for line in listing}
    assert not [p for p in unwanted if p in arrived], sorted(arrived)
    assert not {".git", ".venv", "tests", ".pytest_cache", ".ruff_cache"} & arrived, sorted(arrived)
    assert not [p for p in arrived if "__pycache__" in p or Path(p).name.startswith(".env")], sorted(arrived)
    needed = ["pyproject.toml", "README.md", f"src/{package}/main.py", "alembic.ini", "migrations/env.py"]
    assert set(needed) <= arrived, sorted(arrived)


def test_derived_container_values() -> None:
    """app_uid and redis_image: the same for every answer set, a non-root user, a pinned image."""
    answer_sets = [{}, {"server": "gunicorn", "database": "sqlite", "platforms": ["vm"]}, {"redis": True}]
    uids = {derive(answers)["app_uid"] for answers in answer_sets}
    assert len(uids) == 1 and isinstance(uid := uids.pop(), int) and 1000 <= uid < 65536
    image = derive({"redis": True})["redis_image"]
    name, _, tag = image.partition(":")
    assert name == "redis" and tag and tag != "latest" and tag[0].isdigit()


def test_image_tests_run_the_default_and_the_newest_python() -> None:
    """PYTHON and NEWEST follow copier.yml: its default and its last choice."""
    question = yaml.safe_load((ROOT / "copier.yml").read_text())["python_version"]
    assert question["default"] == PYTHON
    assert question["choices"][-1] == NEWEST
