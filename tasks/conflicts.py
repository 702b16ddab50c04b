"""What a `copier update` left unresolved: files with conflict markers, and rejected hunks.

Copier merges the new release into the project with `git apply`, then `git merge-file` for a
file whose hunks do not apply; changes of both sides that touch the same lines are left inline:

    <<<<<<< before updating
    the project's lines
    =======
    the new release's lines
    >>>>>>> after updating

(`copier update --conflict rej` writes FILE.rej instead.) A step that reads such a file would
read the markers as content (`uv lock` fails on them, a `=======` looks like a variable), so
every step that reads a file asks `refuse()` first, and the after-update sequence starts with
`find()` to name every file to resolve.
"""

from __future__ import annotations

from collections.abc import Callable

from common import Project, run, which

START, MIDDLE, END = "<<<<<<< ", "=======", ">>>>>>> "
SKIP_DIRS = frozenset({".git", ".venv", "node_modules", "__pycache__"})


class Conflicted(Exception):
    """A step would read files that still hold an update's conflicts: {path: marker lines}."""

    def __init__(self, files: dict[str, list[int]]) -> None:
        super().__init__(describe(files))
        self.files = files


def blocks(text: str) -> list[tuple[int, str]]:
    """(line of `<<<<<<<`, the block's text) for every complete block: start, =======, end."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines(keepends=True)
    start = middle = 0
    for number, line in enumerate(lines, 1):
        if line.startswith(START):
            start, middle = number, 0
        elif start and line.rstrip() == MIDDLE:
            middle = number
        elif start and middle and line.startswith(END):
            found.append((start, "".join(lines[start - 1 : number])))
            start = middle = 0
    return found


def _candidates(project: Project) -> list[str]:
    """The project's files as git sees them (tracked, and untracked but not ignored)."""
    git = which("git")
    if git is not None:
        listing = run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=project.root, kind="git"
        )
        if listing.returncode == 0:
            return sorted({name for name in listing.stdout.split("\0") if name})
    return sorted(
        path.relative_to(project.root).as_posix()
        for path in project.root.rglob("*")
        if path.is_file() and not SKIP_DIRS & set(path.relative_to(project.root).parts)
    )


def _committed(project: Project, name: str) -> str:
    """The file as the last commit has it ("" outside git or for a new file)."""
    git = which("git")
    if git is None:
        return ""
    shown = run([git, "show", f"HEAD:./{name}"], cwd=project.root, kind="git")
    return shown.stdout if shown.returncode == 0 else ""


def find(project: Project) -> dict[str, list[int]]:
    """{path: marker lines} for every conflicted file; a FILE.rej maps to [] (rejected hunks).

    A block already in the last commit is content, not a conflict (the generated docs show one).
    """
    found: dict[str, list[int]] = {}
    for name in _candidates(project):
        path = project.root / name
        if not path.is_file():
            continue
        if name.endswith(".rej"):
            found[name] = []
            continue
        present = blocks(path.read_text(encoding="utf-8", errors="replace"))
        if present:
            committed = _committed(project, name)
            lines = [line for line, block in present if block not in committed]
            if lines:
                found[name] = lines
    return found


def refuse(project: Project, wanted: Callable[[str], bool]) -> None:
    """Raise Conflicted if a file the step reads (wanted(path) is true) has conflicts."""
    files = {}
    for name, lines in find(project).items():
        target = name.removesuffix(".rej")
        if wanted(target):
            files[name] = lines
    if files:
        raise Conflicted(files)


def describe(files: dict[str, list[int]]) -> str:
    parts = []
    for name, lines in files.items():
        if not lines:
            parts.append(f"{name} (hunks of {name.removesuffix('.rej')} that did not apply)")
        else:
            where = ", ".join(map(str, lines))
            parts.append(f"{name} (conflict at line{'s' if len(lines) > 1 else ''} {where})")
    return "; ".join(parts)


HOW_TO_RESOLVE = (
    "In each file keep what both sides need and delete the marker lines: between <<<<<<< and "
    "======= is the project as it was, between ======= and >>>>>>> the new release "
    "(`git diff` shows them; docs/update.md says what the template owns). For a FILE.rej, apply "
    "its hunks to FILE by hand and delete the .rej file. Then `git add` the files"
)
