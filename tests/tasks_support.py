"""Helpers for the tests of the post-generation tasks and of `copier update`."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ENV, ROOT, UV

RUN_PY = ROOT / "tasks" / "run.py"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "template-tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "template-tests@example.com",
}
# Answers that keep a copy quick where the database does not matter.
NO_DB = ["--data", "database=none"]


def task_env(**extra: str) -> dict[str, str]:
    """The environment of a user: the template's uv first on PATH, a git identity, no prompts."""
    env = dict(PROJECT_ENV)
    env["PATH"] = f"{Path(UV).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_IDENTITY)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.update(extra)
    return env


def sh(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run and return the result whatever the exit status (the caller asserts on it)."""
    return subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=env or task_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def copier(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The Copier CLI, as a user runs it (tasks use this interpreter: `_copier_python`)."""
    return sh([sys.executable, "-m", "copier", *map(str, args)], cwd=cwd, env=env, timeout=900)


def tasks(step: str, project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One step of tasks/run.py, re-run from the project folder as the docs say."""
    return sh([sys.executable, str(RUN_PY), step, *args], cwd=project, env=env)


def show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-5000:]}\n--- stderr ---\n{result.stderr[-8000:]}"


def aws_key_pair() -> tuple[str, str]:
    """A fresh AWS-shaped key pair, built here so no test file holds a key-shaped literal."""
    key_id = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))
    return key_id, secret


def plant_aws_keys(path: Path) -> tuple[int, int]:
    """Append an AWS key pair to a settings file; returns the two line numbers."""
    key_id, secret = aws_key_pair()
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    first = text.count("\n") + 1
    path.write_text(f'{text}AWS_ACCESS_KEY_ID = "{key_id}"\nAWS_SECRET_ACCESS_KEY = "{secret}"\n')
    return first, first + 1


def env_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file outside .git, .venv and bytecode caches, plus git's HEAD and status."""
    digest = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if {".git", ".venv", "__pycache__"} & set(parts) or not path.is_file():
            continue
        digest[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    if (root / ".git").exists():
        env = task_env()
        digest["<git HEAD>"] = sh(["git", "rev-parse", "HEAD"], cwd=root, env=env).stdout.strip()
        digest["<git status>"] = sh(["git", "status", "--porcelain"], cwd=root, env=env).stdout
    return digest


# A conflict left by `copier update` (git's merge markers at the start of a line).
MARKER_RE = re.compile(rb"^(<<<<<<< |>>>>>>> )", re.MULTILINE)


def git(repo: Path, *args: str) -> str:
    result = sh(["git", *args], cwd=repo)
    assert result.returncode == 0, show(result)
    return result.stdout


def release_repo(template_src: Path, repo: Path) -> Path:
    """A git repository of the template at repo, nothing committed yet: the start of a tagged
    release history (tag_release) that `copier copy --vcs-ref` and `copier update` read."""
    shutil.copytree(template_src, repo)
    git(repo, "init", "-q", "-b", "main")
    return repo


def tag_release(repo: Path, tag: str, message: str) -> Path:
    """Commit everything in repo as a release and tag it."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    git(repo, "tag", tag)
    return repo
