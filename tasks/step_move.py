"""Step `move OLD NEW`: before an update merges, move the project's files from a path the
template moved, so what the user keeps there (their own Alembic revisions, say) follows.

Copier calls it from a versioned `_migrations` entry (stage "before") of the release that moved
the path. It moves tracked files with `git mv` (Copier diffs the index), untracked ones with a
rename, leaves a file whose new path is taken where it is, and removes the caches left behind.
Running it again finds nothing left to move.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from common import Project, StepFailed, run, which


def run_step(project: Project, old: str, new: str) -> str:
    root = project.root.resolve()
    source, target = (root / old).resolve(), (root / new).resolve()
    for path, name in ((source, old), (target, new)):
        if not path.is_relative_to(root) or path == root:
            raise StepFailed(f"{name} is not a path inside the project", "pass paths relative to the project root")
    if not source.exists():
        return f"{old} does not exist: nothing to move"
    git = which("git")
    tracked: set[str] = set()
    if git:
        listed = run([git, "ls-files", "-z", "--", old], cwd=root, kind="git")
        if listed.returncode == 0:
            tracked = {name for name in listed.stdout.split("\0") if name}
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    moved, kept = [], []
    for path in files:
        relative = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        destination = target if source.is_file() else target / path.relative_to(source)
        if destination.exists():
            kept.append(relative)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if relative in tracked and git:
            moved_to = destination.relative_to(root).as_posix()
            result = run([git, "mv", "-k", "--", relative, moved_to], cwd=root, kind="git")
            if result.returncode != 0 or path.exists():
                raise StepFailed(f"`git mv {relative}` failed: {result.output}", "move the file by hand, then re-run")
        else:
            path.rename(destination)
        moved.append(relative)
    if source.is_dir():
        for cache in sorted(source.rglob("__pycache__"), reverse=True):
            shutil.rmtree(cache, ignore_errors=True)
        for folder in sorted((p for p in source.rglob("*") if p.is_dir()), reverse=True):
            _rmdir_if_empty(folder)
        _rmdir_if_empty(source)
    summary = f"moved {len(moved)} file(s) from {old} to {new}"
    if kept:
        project.note(f"left {', '.join(kept)} in place: the same name already exists under {new}; merge them by hand")
    return summary


def _rmdir_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
