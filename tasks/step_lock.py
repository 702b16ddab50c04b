"""Step `lock`: `uv lock`, so the Dockerfile's `uv sync --locked` finds a lock that matches.

`uv lock` leaves an up-to-date uv.lock as it is, so the step is idempotent. It never waits for
ever: the command has a deadline (FD_TASK_TIMEOUT), and a missing uv or an unreachable package
index is reported with the command to run later.
"""

from __future__ import annotations

import re

import conflicts
from common import Project, StepFailed, clean_env, run, working_uv

NETWORK_RE = re.compile(
    r"(failed to fetch|error sending request|dns error|tcp connect error|connection refused|"
    r"could not connect|network is unreachable|timed out|certificate|failed to download|"
    r"client error|server error)",
    re.IGNORECASE,
)
LATER = "when uv works and the index answers, run `uv lock` in the project folder"


def run_step(project: Project) -> str:
    if not (project.root / "pyproject.toml").is_file():
        raise StepFailed("pyproject.toml is missing, so there is nothing to lock", "restore it, then re-run")
    conflicts.refuse(project, lambda name: name in {"pyproject.toml", "uv.lock"})
    try:
        uv = working_uv(project)
    except StepFailed as exc:
        raise StepFailed(exc.problem, f"{exc.fix}; or, {LATER}") from exc
    before = _read(project)
    # A stalled index must not hold the step for uv's default of 3 x 30 s per request.
    env = clean_env()
    env.setdefault("UV_HTTP_TIMEOUT", "20")
    result = run([uv, "lock"], cwd=project.root, kind="lock", env=env, what="resolving the dependencies")
    if result.returncode != 0:
        output = result.output[-1500:]
        if NETWORK_RE.search(output):
            raise StepFailed(
                f"`uv lock` could not reach the package index:\n{output}",
                f"check the network, proxy and index settings (UV_INDEX_URL, SSL_CERT_FILE); {LATER}",
            )
        if "TOML parse error" in output:
            raise StepFailed(
                f"pyproject.toml is not valid TOML:\n{output}",
                "fix the line the message above points at, then re-run",
            )
        raise StepFailed(
            f"`uv lock` exited {result.returncode}:\n{output}",
            "fix pyproject.toml's dependencies so they resolve (the message above names the "
            f"conflict), then re-run; {LATER}",
        )
    after = _read(project)
    if before is None:
        return "created uv.lock"
    return "updated uv.lock" if before != after else "uv.lock already matches pyproject.toml"


def _read(project: Project) -> bytes | None:
    path = project.root / "uv.lock"
    return path.read_bytes() if path.is_file() else None
