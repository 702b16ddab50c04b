"""Whole stacks under the real `docker compose up` (container tier, Docker path).

The service images compose names (derive()'s db_image, redis_image and proxy_image) are used when
present, pulled where a registry answers, and otherwise replaced by stand-ins built here
(tests/service_images.py). Stacks: PostgreSQL + Redis + arq + nginx, MariaDB + Redis + Celery +
Traefik, and PostgreSQL alone with the development override. Each proves: migrate completes before
the app starts; ready 200 (through the proxy where there is one); an item created through the API
is processed by the worker; `docker compose restart db` makes ready 503 and then 200 again without
restarting the app; data survives `down`/`up`; the app is read-only, non-root and without
capabilities; `docker compose stop` ends every container within its grace period (no SIGKILL).
A broken database healthcheck makes `up` fail. `pytest tests/test_compose_stacks.py` runs them alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ROOT, need, run
from containers import Engine, derive
from service_images import ensure_service_images
from test_container import (
    _free_port,
    assert_migrated_then_hardened,
    build_args,
    docker_with_base_images,
    env_secret,
    prepare_project,
    wait_until,
)

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container")]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _compose_tool() -> str:
    found = shutil.which("docker-compose", path=str(ROOT / ".venv" / "bin")) or shutil.which("docker-compose")
    need(found is not None, "docker-compose not installed: uv sync the template's dev group")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def docker() -> Engine:
    return docker_with_base_images("`docker compose up`")


def _until(check: Callable[[], bool], what: str, timeout: float = 90) -> float:
    """A whole stack starts slower than one container: 90 s, polled every 0.2 s."""
    return wait_until(check, what, timeout, poll=0.2)


class Stack:
    """A rendered project, its image built, and `docker compose` bound to one project name."""

    def __init__(
        self, docker: Engine, template_src: Path, dest: Path, answers: dict[str, Any], development: bool = False
    ) -> None:
        self.docker = docker
        self.project = prepare_project(template_src, dest, answers)
        env_secret(self.project)
        env_file = self.project / ".env"
        text = env_file.read_text()
        if "POSTGRES_PASSWORD=" not in text and answers.get("database") == "postgresql":
            env_file.write_text(text + "\nPOSTGRES_PASSWORD=stack_test_password\n")
        if "MYSQL_PASSWORD=" not in text and answers.get("database") == "mysql":
            env_file.write_text(text + "\nMYSQL_PASSWORD=stack_test_password\nMYSQL_ROOT_PASSWORD=stack_test_root\n")
        self.answers = yaml.safe_load((self.project / ".copier-answers.yml").read_text())
        self.context = derive(self.answers)
        image, tag = f"localhost/fd-test-stack-{dest.name}", WORKER
        docker.build(self.project, f"{image}:{tag}", build_args())
        self.port, self.name = _free_port(), f"fd-stack-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "IMAGE": image, "IMAGE_TAG": tag, "APP_PORT": str(self.port)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.files = ["-f", "compose.yaml", *(["-f", "compose.override.yaml"] if development else [])]
        # compose.yaml publishes the proxy on the host's port 80 and the development override the
        # database on 127.0.0.1:5432/3306; here they go to free loopback ports instead (parallel
        # runs and the host's own servers), and nothing else changes.
        ports: dict[str, str] = {}
        self.proxy_url = self.db_port = ""
        if self.context["proxy_image"]:
            self.proxy_url = f"http://127.0.0.1:{_free_port()}"
            ports["proxy"] = f"{self.proxy_url.removeprefix('http://')}:80"
        if development and answers.get("database") in ("postgresql", "mysql"):
            self.db_port = str(_free_port())
            ports["db"] = f"127.0.0.1:{self.db_port}:{5432 if answers['database'] == 'postgresql' else 3306}"
        if ports:
            lines = ["services:"]
            for service, mapping in ports.items():
                lines += [f"  {service}:", "    ports: !override", f'      - "{mapping}"']
            (self.project / "compose.test-ports.yaml").write_text("\n".join(lines) + "\n")
            self.files += ["-f", "compose.test-ports.yaml"]

    def compose(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return run([_compose_tool(), "-p", self.name, *self.files, *args], cwd=self.project, env=self.env,
                   timeout=timeout, check=check)  # fmt: skip

    def container(self, service: str) -> str:
        return f"{self.name}-{service}-1"

    def ready_status(self) -> int:
        return httpx.get(self.url + self.context["health_ready_path"], timeout=3).status_code

    def up_until_ready(self) -> float:
        """`up`, then ready 200 (through the proxy where there is one); the seconds it took."""
        started = time.monotonic()
        self.compose("up", "-d", "--no-build")
        _until(lambda: self.ready_status() == 200, f"{self.name}: ready 200")
        if self.proxy_url:
            ready = self.proxy_url + self.context["health_ready_path"]
            _until(lambda: httpx.get(ready, timeout=3).status_code == 200, f"{self.name}: ready 200 through the proxy")
        return time.monotonic() - started

    def down(self) -> None:
        subprocess.run([_compose_tool(), "-p", self.name, *self.files, "down", "-v", "--remove-orphans", "-t", "10"],
                       cwd=self.project, env=self.env, capture_output=True, timeout=180)  # fmt: skip


@pytest.fixture
def stacks(docker: Engine, template_src: Path, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def _make(name: str, development: bool = False, **answers: Any) -> Stack:
        project_answers = {"project_name": f"Stack {name}", **answers}
        context = derive(project_answers)
        refs = [context["db_image"], context["redis_image"] if answers.get("redis") else "", context["proxy_image"]]
        how = ensure_service_images(docker, [ref for ref in refs if ref])
        print(f"service images: {how}")
        stack = Stack(docker, template_src, tmp_path / name, project_answers, development)
        made.append(stack)
        return stack

    yield _make
    for stack in made:
        stack.down()


def _check_order_and_hardening(stack: Stack) -> None:
    assert_migrated_then_hardened(
        stack.docker, stack.container("migrate"), stack.container("app"), stack.context["app_uid"]
    )


def _check_db_restart(stack: Stack) -> None:
    """The database goes away and comes back (`docker compose stop db`, then `start db`): ready
    answers 503 while it is away, then 200, the app answers throughout, and the app container is
    the same one (not restarted). Stop and start rather than `restart`: a restart can be over
    between two polls, so whether a 503 was seen would depend on the machine's load."""
    app = stack.container("app")
    before = stack.docker.inspect(app, "{{.State.StartedAt}} {{.RestartCount}}")
    seen: list[int] = []

    def ready_is(status: int) -> bool:
        try:
            seen.append(stack.ready_status())
        except httpx.TransportError:
            seen.append(0)
        return seen[-1] == status

    stack.compose("stop", "db")
    _until(lambda: ready_is(503), "ready 503 while the database is stopped")
    stack.compose("start", "db")
    _until(lambda: ready_is(200), "ready 200 again after the database came back")
    assert 0 not in seen, f"the app stopped answering while the database was away: {seen}"
    assert stack.docker.inspect(app, "{{.State.StartedAt}} {{.RestartCount}}") == before


def _check_stop_in_grace(stack: Stack) -> None:
    """`docker compose stop` ends every container by its stop signal, none killed at the deadline."""
    services = stack.compose("ps", "-a", "--format", "{{.Service}}").stdout.split()
    stack.compose("stop")
    for service in services:
        code = stack.docker.inspect(stack.container(service), "{{.State.ExitCode}}")
        assert code != "137", f"{service} was killed at the end of its stop grace period"


def _check_job(stack: Stack, item_id: int, result_key: str) -> None:
    """POST /items/{id}/process, then the worker's result lands in Redis (result_key % job id)."""
    accepted = httpx.post(f"{stack.url}/items/{item_id}/process", timeout=5)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    redis = stack.container("redis")
    _until(
        lambda: stack.docker.run("exec", redis, "redis-cli", "exists", result_key % job_id).stdout.strip() == "1",
        f"the worker did not store the result of job {job_id}",
        timeout=60,
    )
    logs = stack.docker.run("logs", stack.container("worker"))
    worker_log = logs.stdout + logs.stderr  # the worker's own line for the job, with its result
    assert any(job_id in line and f"item {item_id} processed" in line for line in worker_log.splitlines()), worker_log


def _check_stack(stack: Stack, label: str, result_key: str, up: bool = True) -> None:
    if up:
        seconds = stack.up_until_ready()
        print(f"start-to-ready: {label} ready 200 in {seconds:.1f}s")
    _check_order_and_hardening(stack)
    created = httpx.post(stack.url + "/items", json={"name": "kept across down and up"}, timeout=5)
    assert created.status_code == 201, created.text
    if result_key:
        _check_job(stack, created.json()["id"], result_key)
    _check_db_restart(stack)
    _check_stop_in_grace(stack)
    stack.compose("down", "-t", "10")  # containers go, the volumes stay
    stack.up_until_ready()
    names = [item["name"] for item in httpx.get(stack.url + "/items", timeout=5).json()["items"]]
    assert "kept across down and up" in names


def test_postgresql_redis_arq_stack(stacks: Callable[..., Stack]) -> None:
    stack = stacks("pg-arq", database="postgresql", redis=True, worker="arq", reverse_proxy="nginx")
    _check_stack(stack, "PostgreSQL + Redis + arq + nginx (through nginx)", "arq:result:%s")


def test_mariadb_redis_celery_traefik_stack(stacks: Callable[..., Stack]) -> None:
    stack = stacks("maria-celery", database="mysql", redis=True, worker="celery", reverse_proxy="traefik")
    _check_stack(stack, "MariaDB + Redis + Celery + Traefik (through Traefik)", "celery-task-meta-%s")


def test_postgresql_alone_with_the_development_override(stacks: Callable[..., Stack]) -> None:
    """`docker compose up` with compose.override.yaml merged: the same checks (no worker), the
    database published on loopback for local tools, and the mounted code reloads."""
    stack = stacks("pg-dev", development=True, database="postgresql", redis=False, worker="none", reverse_proxy="none")
    seconds = stack.up_until_ready()
    print(f"start-to-ready: PostgreSQL alone, development override, ready 200 in {seconds:.1f}s")
    pg_isready = shutil.which("pg_isready")
    if pg_isready:  # the host's client, through the published port
        run([pg_isready, "-h", "127.0.0.1", "-p", stack.db_port, "-t", "10"])
    main_py = stack.project / "src" / stack.answers["package_name"] / "main.py"
    main_py.write_text(main_py.read_text().replace('title="Stack pg-dev"', 'title="Stack pg-dev, reloaded"'))
    _until(
        lambda: httpx.get(stack.url + "/openapi.json", timeout=2).json()["info"]["title"] == "Stack pg-dev, reloaded",
        "the development server did not reload the changed code",
    )
    _check_stack(stack, "PostgreSQL alone, development override", "", up=False)


@pytest.mark.parametrize(
    ("database", "wrong", "right"),
    [
        ("postgresql", '["CMD", "pg_is_ready"]', "pg_isready"),  # a command the image does not have
        ("mysql", '["CMD", "healthcheck.sh", "--connect", "--innodb-initialized"]', "--innodb_initialized"),
    ],
    ids=["postgres", "mariadb"],
)
def test_a_broken_database_healthcheck_stops_the_stack(
    stacks: Callable[..., Stack], database: str, wrong: str, right: str
) -> None:
    """The stand-ins check what the real images would: with a healthcheck command the image does
    not know (a typo in compose.yaml), the database never turns healthy, `up` fails and neither
    migrate nor the app starts. Timing only is shortened here, so the failure comes in seconds."""
    stack = stacks(f"broken-{database}", database=database, redis=False, worker="none", reverse_proxy="none")
    assert right in (stack.project / "compose.yaml").read_text()  # the rendered file has the right one
    (stack.project / "compose.test-broken.yaml").write_text(
        "services:\n  db:\n    healthcheck:\n"
        f"      test: !override {wrong}\n      interval: 1s\n      retries: 3\n      start_period: 0s\n"
    )
    stack.files += ["-f", "compose.test-broken.yaml"]
    result = stack.compose("up", "-d", "--no-build", check=False)
    assert result.returncode != 0, "compose up succeeded with a broken database healthcheck"
    assert "unhealthy" in result.stdout + result.stderr, result.stdout + result.stderr
    for service in ("migrate", "app"):
        state = stack.docker.inspect(stack.container(service), "{{.State.StartedAt}}")
        assert state.startswith("0001-01-01"), f"{service} started although the database is unhealthy"
