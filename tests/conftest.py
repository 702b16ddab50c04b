"""Shared fixtures for the template's tests.

- `render(dest, **answers)` renders the template from a snapshot of this working tree.
- `project(**answers)` renders once per answer set and runs `uv sync` (cached per session).
- Servers (PostgreSQL, MySQL/MariaDB, Redis) and the container engine are found through
  settings; where one is absent the test skips with the reason. With FD_REQUIRE_ALL=1 (CI sets
  it) every skip is turned into a failure, so nothing missing can pass silently.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import render_cache

ROOT = Path(__file__).resolve().parent.parent
# The template's own tools (ruff, hadolint, shellcheck, actionlint, ...) live beside this Python;
# put them on PATH (last, so a generated project's own environment still wins).
BIN = Path(sys.executable).parent
if str(BIN) not in os.environ["PATH"].split(os.pathsep):
    os.environ["PATH"] = os.environ["PATH"] + os.pathsep + str(BIN)
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv") or "uv"
REQUIRE_ALL = os.environ.get("FD_REQUIRE_ALL") == "1"

POSTGRES_URL = os.environ.get("FD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("FD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")
REDIS_URL = os.environ.get("FD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# What a snapshot of the template leaves out: VCS data, environments and build output.
SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "site", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "*.pyc"
)

# A pyenv shim (make -> uv -> pytest) exports the version it resolved, which would pin every
# nested shim to it and hide each generated project's own .python-version: drop it here.
for _leaked in ("PYENV_VERSION", "PYENV_DIR"):
    os.environ.pop(_leaked, None)

# The environment in which generated projects run: never download a Python, share one cache.
PROJECT_ENV = {
    **os.environ,
    "UV_PYTHON_DOWNLOADS": "never",
    "UV_NO_PROGRESS": "1",
    "VIRTUAL_ENV": "",
}
PROJECT_ENV.pop("VIRTUAL_ENV")

_HOST_PYTHON_PROBLEMS: dict[str, str] = {}
render_cache.memoize_jinja_compile()  # every render in this process, also a test's own run_copy


def _on_path(version: str) -> bool:
    """A working python<version> on PATH (a pyenv shim for a version pyenv lacks does not count)."""
    found = shutil.which(f"python{version}", path=os.environ["PATH"])
    if found is None:
        return False
    probe = subprocess.run([found, "-c", "pass"], capture_output=True, env={**os.environ, "PYENV_VERSION": version})
    return probe.returncode == 0


def host_python(version: str) -> str | None:
    """Make python<version> findable by uv where neither the system nor pyenv has it (3.14 and
    3.15 here): the interpreter of Debian's package from tests/containers.py's root, built once per
    machine and kept in the temporary folder. Its folder goes first on PATH for this session and
    every generated project. None when the interpreter is there, else the reason it is not."""
    if version in _HOST_PYTHON_PROBLEMS:
        return _HOST_PYTHON_PROBLEMS[version] or None
    problem = ""
    if not _on_path(version):
        from containers import host_python_dir

        try:
            folder = str(host_python_dir(version))
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            problem = f"Python {version} is not installed and no Debian root for it could be built here: {exc}"
        else:
            for env in (os.environ, PROJECT_ENV):
                env["PATH"] = folder + os.pathsep + env["PATH"]
    _HOST_PYTHON_PROBLEMS[version] = problem
    return problem or None


def default_python() -> str:
    from containers import derive

    return derive({})["python"]["version"]


@pytest.fixture(scope="session", autouse=True)
def _default_python_on_path() -> None:
    """The default Python of the template: every render without python_version (and its lock
    task) needs it."""
    host_python(default_python())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under FD_REQUIRE_ALL=1, which forbids skips: {reason}"
    return report


# Markers from what a test uses, so the tiers (Makefile: test-fast, test) select by marker and
# `pytest -m postgres` finds every test that needs PostgreSQL. A test's own marks are kept.
FIXTURE_MARKS = {
    "postgres_url": "postgres",
    "mysql_url": "mysql",
    "redis_url": "redis",
    "engine": "container",  # tests/test_container.py: an image built and run by Docker or Podman
    "project": "slow",  # a generated project with its environment synced, whose suite or server runs
    "running_app": "slow",
    "template_repo": "slow",  # tests/test_update.py: two template releases and a copier update
    "copied": "slow",  # tests/test_tasks.py: a copy with every post-generation task (uv lock, git)
    "combinations": "slow",  # tests/test_container.py: every pairwise answer set rendered again
}
SERVER_MARKS = {"postgresql": "postgres", "mysql": "mysql"}


def _default_database() -> str:
    import yaml

    return yaml.safe_load((ROOT / "copier.yml").read_text())["database"]["default"]


def _needs(item: pytest.Item, default_database: str) -> set[str]:
    """Markers for one test: its fixtures, and for a test using fresh_database the servers its
    parameters name. A parameter is read as answers when it is a dict, or a key of the module's
    VARIANTS (answer sets by name, as in tests/test_container.py); else a string names a database.
    """
    names = set(item.fixturenames)
    marks = {mark for fixture, mark in FIXTURE_MARKS.items() if fixture in names}
    callspec = getattr(item, "callspec", None)
    variants = getattr(item.module, "VARIANTS", {})
    for value in callspec.params.values() if callspec else ():
        answers = value if isinstance(value, dict) else variants.get(value) if isinstance(value, str) else None
        if "fresh_database" not in names:
            continue  # only a test that asks for a database runs the app against its servers
        if answers is not None:
            marks.add(SERVER_MARKS.get(answers.get("database", default_database), ""))
            if answers.get("redis"):
                marks.add("redis")
        elif isinstance(value, str):
            marks.add(SERVER_MARKS.get(value, ""))
    marks.discard("")
    return marks


HEAVY_MARKS = {"postgres", "mysql", "redis", "container", "slow"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    default_database = _default_database()
    for item in items:
        present = {mark.name for mark in item.iter_markers()}
        needs = _needs(item, default_database)
        for name in sorted(needs - present):
            item.add_marker(name)
        if not (present | needs) & HEAVY_MARKS:
            item.add_marker("fast")  # needs no server, engine or generated environment: `make test-fast`


def need(condition: bool, reason: str) -> None:
    """Skip with a visible reason when a server or tool is missing (a failure in CI)."""
    if not condition:
        pytest.skip(reason)


def filled_env(project: Path) -> str:
    """.env.example with every placeholder replaced by a fresh secret, as a user would fill it."""
    lines = []
    for line in (project / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and "_your_" in value and value.endswith("_here"):
            value = secrets.token_urlsafe(24)
        lines.append(f"{key}{sep}{value}")
    return "\n".join(lines) + "\n"


def run(
    cmd: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, and on failure show its output in the assertion message."""
    result = subprocess.run(cmd, cwd=cwd, env=env or PROJECT_ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result


def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this session shares: the controller's basetemp
    (each worker's own is <that>/gwN), or without xdist the session's own basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# The session's snapshot and the folder of its pristine renders (tests/render_cache.py).
_RENDER_CACHE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def template_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain copy of the working tree, so renders use uncommitted changes and no git tag.

    One copy per session, shared by the xdist workers (so the renders they share record one
    `_src_path`); treat it as read-only."""
    import yaml

    shared = session_tmp(tmp_path_factory)
    dest = shared / "template" / "fastapi-deploy"
    with render_cache.locked(shared / "template.lock"):
        if not (shared / "template" / "complete").is_file():
            shutil.rmtree(dest.parent, ignore_errors=True)
            shutil.copytree(ROOT, dest, ignore=SNAPSHOT_IGNORE)
            (dest.parent / "complete").touch()
    (shared / "renders").mkdir(exist_ok=True)
    render_cache.STATIC_DEFAULTS.update(render_cache.static_defaults(yaml.safe_load((dest / "copier.yml").read_text())))
    _RENDER_CACHE.update(src=dest, dir=shared / "renders")
    return dest


def render_template(src: Path, dest: Path, *, tasks: bool = False, **answers: Any) -> Path:
    """Render the template into dest, a folder of the caller's own to read or change.

    Without tasks, from the session's snapshot into a new or empty dest, Copier renders each
    answer set once per session and later calls get a copy (tests/render_cache.py); a refused
    answer set is refused by Copier on every call, into the caller's own dest."""
    from copier import run_copy

    if tasks:  # the lock task resolves for the project's Python
        problem = host_python(answers.get("python_version") or default_python())
        need(problem is None, problem or "")

    def _render() -> None:
        run_copy(
            str(src),
            str(dest),
            data=answers,
            defaults=True,
            unsafe=True,
            skip_tasks=not tasks,
            quiet=True,
        )

    fresh = not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))
    if tasks or not fresh or _RENDER_CACHE.get("src") != src:
        _render()
        return dest
    return render_cache.cached_render(_RENDER_CACHE["dir"], answers, dest, _render)


@pytest.fixture
def render(template_src: Path, tmp_path: Path) -> Callable[..., Path]:
    """render(**answers) -> a freshly rendered project in its own folder (tasks skipped)."""
    counter = iter(range(10_000))

    def _render(dest: Path | None = None, *, tasks: bool = False, **answers: Any) -> Path:
        target = dest or tmp_path / f"project{next(counter)}"
        return render_template(template_src, target, tasks=tasks, **answers)

    return _render


_PROJECTS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def project(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """project(**answers) -> a rendered project with its environment synced (one per answer set).

    Shared across tests: treat the returned folder as read-only, or copy it first.
    """

    def _project(**answers: Any) -> Path:
        key = json.dumps(answers, sort_keys=True)
        if key not in _PROJECTS:
            problem = host_python(answers.get("python_version") or default_python())
            need(problem is None, problem or "")
            dest = tmp_path_factory.mktemp("project") / (answers.get("project_slug") or "my-service")
            render_template(template_src, dest, **answers)
            run([UV, "sync", "--quiet"], cwd=dest, timeout=900)
            _PROJECTS[key] = dest
        return _PROJECTS[key]

    return _project


def _reachable(url: str) -> str | None:
    """None when a server answers at url, else the reason it does not."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.scheme} at {parts.hostname}:{parts.port} is unreachable ({exc})"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Admin URL of a PostgreSQL server (FD_TEST_POSTGRES_URL)."""
    reason = _reachable(POSTGRES_URL)
    need(reason is None, f"PostgreSQL needed: {reason}; set FD_TEST_POSTGRES_URL")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """Admin URL of a MySQL/MariaDB server (FD_TEST_MYSQL_URL)."""
    reason = _reachable(MYSQL_URL)
    need(reason is None, f"MySQL/MariaDB needed: {reason}; set FD_TEST_MYSQL_URL")
    return MYSQL_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    reason = _reachable(REDIS_URL)
    need(reason is None, f"Redis needed: {reason}; set FD_TEST_REDIS_URL")
    return REDIS_URL


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """fresh_database(kind) -> URL of a new, empty database on that server, dropped afterwards.

    kind is "postgresql" or "mysql"; "sqlite" gives a file in a temporary folder.
    """
    import uuid

    created: list[tuple[str, str]] = []

    def _create(kind: str) -> str:
        name = f"fd_{uuid.uuid4().hex[:12]}"
        if kind == "sqlite":
            folder = Path(request.getfixturevalue("tmp_path"))
            return f"sqlite:///{folder / (name + '.db')}"
        admin = request.getfixturevalue("postgres_url" if kind == "postgresql" else "mysql_url")
        _admin_sql(kind, admin, f"CREATE DATABASE {name}")
        created.append((kind, name))
        return admin.rsplit("/", 1)[0] + f"/{name}"

    yield _create
    for kind, name in created:
        admin = POSTGRES_URL if kind == "postgresql" else MYSQL_URL
        _admin_sql(kind, admin, f"DROP DATABASE IF EXISTS {name}")


def _admin_sql(kind: str, admin_url: str, sql: str) -> None:
    """Run one statement as the server's admin with its command-line client."""
    from urllib.parse import urlsplit

    parts = urlsplit(admin_url)
    if kind == "postgresql":
        cmd = ["psql", "-h", parts.hostname, "-p", str(parts.port), "-U", parts.username or "postgres"]
        cmd += ["-d", parts.path.lstrip("/") or "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]
    else:
        cmd = ["mysql", "-h", parts.hostname, "-P", str(parts.port), "-u", parts.username or "root"]
        if parts.password:
            cmd.append(f"-p{parts.password}")
        cmd += ["-e", sql]
    run(cmd, env=dict(os.environ))
