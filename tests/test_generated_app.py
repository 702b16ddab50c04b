"""The generated project works: its own test suite passes on SQLite, PostgreSQL and MariaDB,
its migrations go up, down and up again with no pending autogenerate diff, and concurrent
upgrades of one empty database all succeed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PROJECT_ENV, UV, run


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


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mysql"])
def test_generated_suite_passes_on_each_database(
    database: str, project: Callable[..., Path], fresh_database: Callable[[str], str]
) -> None:
    root = project(database=database)
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
    ],
    ids=["gunicorn-arq-metrics-sentry", "mysql-celery-metrics", "nodb-redis", "nodb-bare"],
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
