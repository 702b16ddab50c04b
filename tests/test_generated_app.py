"""The generated project works: its own test suite passes on SQLite, PostgreSQL and MariaDB,
its migrations go up, down and up again with no pending autogenerate diff, and concurrent
upgrades of one empty database all succeed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PROJECT_ENV, UV, default_python, need, run
from deploy_checks import context_module

NEWEST = context_module().PYTHON_VERSIONS[-1]  # the newest Python the question offers (3.15)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in PROJECT_ENV.items() if k != "DATABASE_URL"}
    return {**env, "REQUIRE_SERVICES": "1", **extra}


def _pytest(project: Path, **env: str) -> str:
    result = run([UV, "run", "--frozen", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=_env(**env))
    return result.stdout


def _passed(output: str) -> int:
    import re

    match = re.search(r"(\d+) passed", output)
    assert match, output
    assert " failed" not in output and " error" not in output and " skipped" not in output, output
    return int(match.group(1))


def _python_of(root: Path) -> str:
    """major.minor of the project's own environment."""
    version = run([str(root / ".venv/bin/python"), "-c", "import sys; print(sys.version)"], cwd=root)
    return ".".join(version.stdout.split(".")[:2])


@pytest.mark.parametrize(
    ("database", "python"),
    [("sqlite", None), ("postgresql", None), ("mysql", None), ("postgresql", NEWEST), ("mysql", NEWEST)],
    ids=["sqlite", "postgresql", "mysql", f"postgresql-py{NEWEST}", f"mysql-py{NEWEST}"],
)
def test_generated_suite_passes_on_each_database(
    database: str, python: str | None, project: Callable[..., Path], fresh_database: Callable[[str], str]
) -> None:
    """On the default Python (3.14) and on the newest (3.15), against the real servers."""
    root = project(database=database, **({"python_version": python} if python else {}))
    assert _python_of(root) == (python or default_python())
    url = fresh_database(database)
    output = _pytest(root, TEST_DATABASE_URL=url)
    assert _passed(output) >= 30


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mysql"])
def test_migrations_up_check_down_up(
    database: str, project: Callable[..., Path], fresh_database: Callable[[str], str]
) -> None:
    root = project(database=database)
    env = _env(DATABASE_URL=fresh_database(database))
    alembic = [UV, "run", "--frozen", "alembic"]
    run([*alembic, "upgrade", "head"], cwd=root, env=env)
    run([*alembic, "check"], cwd=root, env=env)
    assert "0001 (head)" in run([*alembic, "current"], cwd=root, env=env).stdout
    run([*alembic, "downgrade", "base"], cwd=root, env=env)
    assert "0001" not in run([*alembic, "current"], cwd=root, env=env).stdout
    run([*alembic, "upgrade", "head"], cwd=root, env=env)
    run([*alembic, "check"], cwd=root, env=env)


@pytest.mark.parametrize("database", ["postgresql", "mysql"])
def test_three_concurrent_upgrades_of_an_empty_database(
    database: str, project: Callable[..., Path], fresh_database: Callable[[str], str]
) -> None:
    root = project(database=database)
    env = _env(DATABASE_URL=fresh_database(database))
    python = str(root / ".venv" / "bin" / "python")
    processes = [
        subprocess.Popen(
            [python, "-m", "alembic", "upgrade", "head"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in processes]
    codes = [p.returncode for p in processes]
    assert codes == [0, 0, 0], "\n---\n".join(outputs)
    # Exactly one process applied the revision; the others found it done.
    applied = sum("Running upgrade  -> 0001" in out for out in outputs)
    assert applied == 1, "\n---\n".join(outputs)
    run([UV, "run", "--frozen", "alembic", "check"], cwd=root, env=env)


@pytest.mark.parametrize(
    "answers",
    [
        {"server": "gunicorn", "redis": True, "worker": "arq", "metrics": True, "sentry": True},
        {"database": "mysql", "redis": True, "worker": "celery", "metrics": True},
        {"database": "none", "redis": True, "sentry": True, "metrics": True},
        {"database": "none"},
        # Every dependency of every combination installs and works on the newest Python too.
        {
            "server": "gunicorn",
            "redis": True,
            "worker": "arq",
            "metrics": True,
            "sentry": True,
            "python_version": NEWEST,
        },
        {"database": "mysql", "redis": True, "worker": "celery", "metrics": True, "python_version": NEWEST},
        {"database": "none", "redis": True, "worker": "arq"},
        {"database": "none", "redis": True, "worker": "celery"},
    ],
    ids=[
        "gunicorn-arq-metrics-sentry",
        "mysql-celery-metrics",
        "nodb-redis",
        "nodb-bare",
        f"gunicorn-arq-metrics-sentry-py{NEWEST}",
        f"mysql-celery-metrics-py{NEWEST}",
        "nodb-arq",
        "nodb-celery",
    ],
)
def test_generated_suite_passes_with_extras(
    answers: dict[str, object],
    project: Callable[..., Path],
    fresh_database: Callable[[str], str],
    request: pytest.FixtureRequest,
) -> None:
    root = project(**answers)
    env: dict[str, str] = {}
    if answers.get("redis"):
        env["TEST_REDIS_URL"] = request.getfixturevalue("redis_url")
    database = answers.get("database", "postgresql")
    if database != "none":
        env["TEST_DATABASE_URL"] = fresh_database(database)
    output = _pytest(root, **env)
    assert _passed(output) >= 12


def test_redis_ready_check_fails_without_redis_when_required(project: Callable[..., Path]) -> None:
    """REQUIRE_SERVICES=1 turns a missing Redis into a failure in the generated suite too."""
    root = project(database="none", redis=True)
    result = run(
        [UV, "run", "--frozen", "pytest", "-q", "-p", "no:cacheprovider", "-k", "redis"],
        cwd=root,
        env=_env(TEST_REDIS_URL="redis://127.0.0.1:9/0"),
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert "Redis is required (REQUIRE_SERVICES=1) but unreachable" in result.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "uvicorn-workers"])
def test_server_on_all_addresses_answers_ipv4_and_ipv6(
    server: str, project: Callable[..., Path], fresh_database: Callable[[str], str]
) -> None:
    """HOST '::' (the Railway default) must also accept IPv4: the launcher opens a dual-stack
    socket, where asyncio alone would listen on IPv6 only."""
    import signal
    import socket
    import time
    import urllib.request

    need(socket.has_dualstack_ipv6(), "this host has no dual-stack IPv6")
    root = project(server=server, database="sqlite", platforms=["railway"])
    port = _free_port()
    env = _env(HOST="::", PORT=str(port), DATABASE_URL=fresh_database("sqlite"), GRACEFUL_TIMEOUT="3",
               ENVIRONMENT="development")  # fmt: skip
    run([UV, "run", "--frozen", "alembic", "upgrade", "head"], cwd=root, env=env)
    process = subprocess.Popen(
        [str(root / ".venv" / "bin" / "python"), "-m", "my_service.serve"],
        cwd=root,
        env={**env, "PATH": f"{root / '.venv' / 'bin'}:{env['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answers: dict[str, int] = {}
        deadline = time.monotonic() + 30
        for host in ("127.0.0.1", "[::1]"):
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/health/ready", timeout=2) as response:
                        answers[host] = response.status
                        break
                except OSError:
                    time.sleep(0.2)
        assert answers == {"127.0.0.1": 200, "[::1]": 200}, answers
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn re-raises SIGTERM after its clean shutdown (exit status 143 in a container).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output
    assert {"uvicorn": "Application shutdown complete", "gunicorn": "Shutting down: Master",
            "uvicorn-workers": "Stopping parent process"}[server] in output  # fmt: skip


def test_celery_worker_concurrency_is_a_setting_not_the_node_cpu_count(project: Callable[..., Path]) -> None:
    """Issue 13.8: Celery forks one process per CPU of the node (not of the container's limits)
    unless told; the worker takes WORKER_CONCURRENCY, by default derive()'s value."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "extensions"))
    import context

    answers = {"database": "mysql", "redis": True, "worker": "celery", "metrics": True}
    root = project(**answers)
    expected = context.derive({**answers, "package_name": "my_service"})["worker_concurrency"]
    code = "from my_service.worker import celery_app; print(celery_app.conf.worker_concurrency)"
    for env, value in (({}, expected), ({"WORKER_CONCURRENCY": "5"}, 5)):
        result = run(
            [UV, "run", "--frozen", "python", "-c", code], cwd=root, env=_env(REDIS_URL="redis://127.0.0.1:1/0", **env)
        )
        assert result.stdout.strip() == str(value), result.stdout
    refused = run(
        [UV, "run", "--frozen", "python", "-c", code], cwd=root, env=_env(WORKER_CONCURRENCY="0"), check=False
    )
    assert refused.returncode != 0 and "worker_concurrency" in refused.stderr.lower()


def test_the_suite_never_writes_to_the_database_it_is_given(
    project: Callable[..., Path], fresh_database: Callable[[str], str], postgres_url: str
) -> None:
    """TEST_DATABASE_URL names a server: the suite makes its own database there and drops it."""
    root = project(database="postgresql")
    given = fresh_database("postgresql")
    name = given.rsplit("/", 1)[1]
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc"]
    run([*psql, "CREATE TABLE items (id int); INSERT INTO items VALUES (1)", "-d", name], env=dict(os.environ))
    # The suite's own databases are named test_<package>_<random>; none may outlive it.
    databases = "SELECT datname FROM pg_database WHERE datname LIKE 'test_my_service_%'"
    before = run([*psql, databases], env=dict(os.environ)).stdout
    _passed(_pytest(root, TEST_DATABASE_URL=given))
    assert run([*psql, "SELECT count(*) FROM items", "-d", name], env=dict(os.environ)).stdout.strip() == "1"
    left = set(run([*psql, databases], env=dict(os.environ)).stdout.split()) - set(before.split())
    assert not left, f"the suite left its databases behind: {left}"


def _serve(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    package = next((root / "src").iterdir()).name
    return subprocess.Popen(
        [str(root / ".venv" / "bin" / "python"), "-m", f"{package}.serve"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn-workers"])
def test_metrics_of_every_worker_add_up(server: str, project: Callable[..., Path]) -> None:
    """Several worker processes, one /metrics: each scrape counts the requests of all of them
    (serve.py points PROMETHEUS_MULTIPROC_DIR at a fresh shared directory)."""
    import re
    import secrets
    import signal
    import time

    root = project(server=server, database="none", metrics=True)
    port, token = _free_port(), secrets.token_urlsafe(32)
    env = _env(ENVIRONMENT="production", SECRET_KEY=secrets.token_urlsafe(48), METRICS_TOKEN=token,
               HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="3", GRACEFUL_TIMEOUT="3")  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = _serve(root, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get_or_none(base + "/health/ready") != 200:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        # New connections each time, so the kernel spreads the requests over the workers.
        requests = 30
        assert [_get(base + "/health/live")[0] for _ in range(requests)] == [200] * requests
        pattern = re.compile(r'http_requests_total\{method="GET",route="/health/live",status="200"\} (\S+)')
        counts = []
        for _ in range(6):
            status, text = _get(base + "/metrics", {"Authorization": f"Bearer {token}"})
            assert status == 200, text
            found = pattern.search(text)
            assert found, text[-2000:]
            counts.append(float(found.group(1)))
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert counts == [requests] * 6, (counts, output[-3000:])


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)[0]
    except OSError:
        return None
