"""Schemathesis against the live generated app's own OpenAPI schema, on PostgreSQL and SQLite.

The app runs as it does in a container (`python -m <package>.serve`, production settings, the
schema switched on with DOCS_ENABLED), migrated, on a fresh database. Every operation of the
schema is fuzzed (coverage, fuzzing and stateful phases) with three checks: no 5xx, responses
that match their documented schema, and only documented status codes. The server's own access
log must show no 500 either. A last test puts one fixed defect back (text may hold NUL again,
which PostgreSQL cannot store) and shows that the same run then fails.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BIN, PROJECT_ENV, UV, run

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
# Cases per operation and phase: with the coverage phase's boundary values, enough to reach every
# bound and type; about 30 s per database on an idle machine.
MAX_EXAMPLES = 15
SEED = "1"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveApp:
    def __init__(self, base: str, log: Path) -> None:
        self.base, self.log = base, log

    def access_statuses(self) -> list[int]:
        """Status of every request in the app's JSON access log."""
        statuses = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("logger", "").endswith(".access"):
                    statuses.append(int(record["status"]))
        return statuses


@contextmanager
def live_app(root: Path, database_url: str, log: Path, src: Path | None = None) -> Iterator[LiveApp]:
    """The generated app serving on a free port, production settings, migrated database."""
    port = _free_port()
    env = {
        **{k: v for k, v in PROJECT_ENV.items() if k != "DATABASE_URL"},
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DOCS_ENABLED": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GRACEFUL_TIMEOUT": "3",
        "LOG_LEVEL": "INFO",
    }
    if src is not None:  # a patched copy of the package comes before the installed one
        env["PYTHONPATH"] = str(src)
    run([UV, "run", "--frozen", "alembic", "upgrade", "head"], cwd=root, env=env)
    package = next((root / "src").iterdir()).name
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(root / ".venv" / "bin" / "python"), "-m", f"{package}.serve"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/health/live", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the app did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield LiveApp(base, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def schemathesis(base: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(BIN)) or "st"
    cmd = [st, "run", f"{base}/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES)]
    # NUL characters too (schemathesis leaves them out by default): PostgreSQL cannot store them.
    cmd += ["--generation-allow-x00", "true", "--seed", SEED, "--generation-database", "none"]
    cmd += ["--workers", "1", "--no-color", *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=PROJECT_ENV)


def _operations(base: str) -> int:
    with urllib.request.urlopen(base + "/openapi.json", timeout=5) as response:
        schema = json.load(response)
    return sum(len(methods) for methods in schema["paths"].values())


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_schemathesis_finds_no_failure_on_the_live_app(
    database: str, project: Callable[..., Path], fresh_database: Callable[[str], str], tmp_path: Path
) -> None:
    root = project(database=database)
    with live_app(root, fresh_database(database), tmp_path / "app.log") as app:
        result = schemathesis(app.base, tmp_path)
        operations = _operations(app.base)
        statuses = app.access_statuses()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert f"Selected: {operations}/{operations}" in output, output[-3000:]
    assert re.search(rf"Tested: {operations}\b", output), output[-3000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated, output[-3000:]
    server_errors = sum(status >= 500 for status in statuses)
    # The figures for the closing note (pytest -rA shows them).
    print(f"{database}: {generated.group(1)} cases over {operations} operations, "
          f"{len(statuses)} requests served, {server_errors} with a 5xx")  # fmt: skip
    assert len(statuses) >= int(generated.group(1)) // 2, "the access log misses requests"
    assert server_errors == 0, [s for s in statuses if s >= 500]


def test_schemathesis_fails_when_a_defect_is_put_back(
    project: Callable[..., Path], fresh_database: Callable[[str], str], tmp_path: Path
) -> None:
    """Ids, offsets and quantities unbounded again (defect 1): PostgreSQL's INTEGER overflows."""
    root = project(database="postgresql")
    src = tmp_path / "src"
    shutil.copytree(root / "src", src)
    schemas = next(src.iterdir()) / "schemas.py"
    text = schemas.read_text()
    for name, low in (("Quantity", 0), ("ItemId", 1), ("Offset", 0)):
        bounded = f"{name} = Annotated[int, Field(ge={low}, le=INT32_MAX)]"
        assert bounded in text, f"{bounded!r} is gone from schemas.py: update this test"
        text = text.replace(bounded, f"{name} = Annotated[int, Field(ge={low})]")
    schemas.write_text(text)
    with live_app(root, fresh_database("postgresql"), tmp_path / "app.log", src=src) as app:
        result = schemathesis(app.base, tmp_path, "--phases", "fuzzing", "--max-examples", "50")
        statuses = app.access_statuses()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Server error" in output, output[-3000:]
    assert 500 in statuses
