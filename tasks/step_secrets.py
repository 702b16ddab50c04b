"""Step `secrets`: write .env from .env.example with fresh random values, mode 600.

Every placeholder of the form `*_your_*_here` gets a random value; a placeholder that appears
several times (the database password in POSTGRES_PASSWORD and inside DATABASE_URL) gets the same
value everywhere, so the URL keeps matching the password. An existing .env is never touched.
"""

from __future__ import annotations

import os
import re
import secrets
import string

import conflicts
from common import Project, StepFailed

ENV_FILE = ".env"
EXAMPLE_FILE = ".env.example"
# The placeholder convention of the template (extensions/context.py: placeholder()).
PLACEHOLDER_RE = re.compile(r"[A-Za-z0-9_]*_your_[a-z_]+?_here(?![A-Za-z0-9_])")
# Letters and digits only: safe unquoted in .env files, URLs, shells, YAML and compose files.
ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64  # SECRET_KEY and other keys: about 380 bits
PASSWORD_LENGTH = 32  # database passwords: about 190 bits


def random_value(placeholder: str) -> str:
    length = PASSWORD_LENGTH if "password" in placeholder else KEY_LENGTH
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def fill(example: str) -> tuple[str, dict[str, str]]:
    """example text -> (.env text, {placeholder: value}); one value per distinct placeholder."""
    values: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        placeholder = match.group(0)
        if placeholder not in values:
            values[placeholder] = random_value(placeholder)
        return values[placeholder]

    lines = []
    for line in example.splitlines(keepends=True):
        lines.append(line if line.lstrip().startswith("#") else PLACEHOLDER_RE.sub(replace, line))
    return "".join(lines), values


NAME_RE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def variables(text: str) -> list[str]:
    """The variable names a .env text assigns (comments, blank and other lines are no names)."""
    return [match.group(1) for line in text.splitlines() if (match := NAME_RE.match(line.strip()))]


def run_step(project: Project) -> str:
    env_path = project.root / ENV_FILE
    example_path = project.root / EXAMPLE_FILE
    conflicts.refuse(project, lambda name: name == EXAMPLE_FILE)
    if env_path.exists():
        missing = []
        if example_path.is_file():
            have = set(variables(env_path.read_text(encoding="utf-8", errors="replace")))
            missing = [name for name in variables(example_path.read_text(encoding="utf-8")) if name not in have]
        mode = env_path.stat().st_mode & 0o777
        if mode & 0o077:
            project.note(f".env is readable by others (mode {mode:o}): `chmod 600 .env` keeps its secrets yours")
        if missing:
            project.note(
                f".env lacks {', '.join(missing)}, which .env.example documents: copy those lines "
                "into .env and give any *_your_*_here value a random one (.env is never rewritten)"
            )
        return "kept the existing .env (it is never overwritten)"
    if not example_path.is_file():
        raise StepFailed(
            f"{EXAMPLE_FILE} is missing, so there is nothing to write .env from",
            f"restore {EXAMPLE_FILE} (git checkout -- {EXAMPLE_FILE}, or `copier recopy`), then re-run",
        )
    text, values = fill(example_path.read_text(encoding="utf-8"))
    names = [name for name in variables(text) if any(v in line_of(text, name) for v in values.values())]
    try:
        # O_EXCL: never replace a .env that appeared meanwhile; 0o600 from the first byte.
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return "kept the existing .env (it is never overwritten)"
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    generated = ", ".join(names) if names else "no placeholders to fill"
    return f"wrote .env (mode 600) from .env.example with fresh values for {generated}"


def line_of(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"{name}="):
            return line
    return ""
