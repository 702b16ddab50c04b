"""Step `secret-check`: scan the files that would be committed with detect-secrets.

The files are git's view of the project: tracked files plus untracked ones that .gitignore does
not exclude (so .env is never scanned, and never committed). Outside a repository the same list
comes from a scratch git directory pointed at the project, which leaves the project untouched.
The scan takes its plugins and filters from .secrets.baseline; a finding fails the step unless
the baseline records it (audited with `detect-secrets audit`) and it is not marked as a real secret.
`detect-secrets scan` exits 0 whatever it finds, so the step reads the JSON `results`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import conflicts
from common import BASELINE_FILE, DETECT_SECRETS_PIN, Project, StepFailed, run, which, working_uv

FIX = (
    "remove the secret from the file and read it from the environment instead (.env locally, "
    "the platform's secret store in production), and rotate it if it was ever pushed. If it is "
    "not a secret (a placeholder, a test value), end its line with `# pragma: allowlist secret` "
    "(or put `# pragma: allowlist nextline secret` on the line before), or record it in the "
    f"baseline: `detect-secrets scan --baseline {BASELINE_FILE}` then "
    f"`detect-secrets audit {BASELINE_FILE}`. Then re-run this step"
)


@dataclass(frozen=True, order=True)
class Finding:
    filename: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.kind}"


def git_files(project: Project) -> list[str]:
    """Paths (relative to the project) that `git add -A` would commit, plus the tracked ones."""
    git = which("git")
    if git is None:
        raise StepFailed("git is not on PATH, so the files to commit cannot be listed", "install git, then re-run")
    inside = run([git, "rev-parse", "--is-inside-work-tree"], cwd=project.root, kind="git")
    listing = ["ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    if inside.returncode == 0 and inside.stdout.strip() == "true":
        result = run([git, *listing], cwd=project.root, kind="git")
    else:
        with tempfile.TemporaryDirectory(prefix="fd-files.") as scratch:
            init = run([git, "init", "-q", scratch], cwd=project.root, kind="git")
            if init.returncode != 0:
                raise StepFailed(f"`git init` in a scratch folder failed: {init.output}", "check git, then re-run")
            scratch_git = str(Path(scratch) / ".git")
            result = run(
                [git, f"--git-dir={scratch_git}", f"--work-tree={project.root}", *listing],
                cwd=project.root,
                kind="git",
            )
    if result.returncode != 0:
        raise StepFailed(f"`git ls-files` failed: {result.output}", "check the repository, then re-run")
    names = sorted({name for name in result.stdout.split("\0") if name})
    return [name for name in names if name != BASELINE_FILE and (project.root / name).is_file()]


def detect_secrets_argv(project: Project) -> list[str]:
    tool = which("detect-secrets", beside_python=True)
    if tool:
        return [tool]
    try:
        uv = working_uv(project)
    except StepFailed as exc:
        raise StepFailed(
            f"detect-secrets is not installed and uv cannot fetch it ({exc.problem})",
            f"install it (`pipx install {DETECT_SECRETS_PIN}` or `uv tool install {DETECT_SECRETS_PIN}`), then re-run",
        ) from exc
    return [uv, "tool", "run", "--from", DETECT_SECRETS_PIN, "detect-secrets"]


def load_baseline(project: Project) -> dict[str, Any] | None:
    path = project.root / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StepFailed(
            f"{BASELINE_FILE} is not valid JSON ({exc})",
            f"restore it (`git checkout -- {BASELINE_FILE}`) or recreate it with "
            f"`detect-secrets scan > {BASELINE_FILE}` after removing every real secret, then re-run",
        ) from exc


def scan(project: Project, files: list[str]) -> list[Finding]:
    """The findings in files that the baseline does not accept."""
    if not files:
        return []
    argv = detect_secrets_argv(project)
    baseline = load_baseline(project)
    with tempfile.TemporaryDirectory(prefix="fd-secret-scan.") as scratch:
        if baseline is None:
            result = run([*argv, "scan", "--no-verify", *files], cwd=project.root, kind="scan")
            output = result.stdout
        else:
            # `scan --baseline` takes the plugins and filters from the baseline but rewrites the
            # file it is given: give it a scratch copy, and read the new results from there.
            scratch_baseline = Path(scratch) / "baseline.json"
            shutil.copyfile(project.root / BASELINE_FILE, scratch_baseline)
            result = run(
                [*argv, "scan", "--no-verify", "--baseline", str(scratch_baseline), *files],
                cwd=project.root,
                kind="scan",
            )
            output = scratch_baseline.read_text(encoding="utf-8") if result.returncode == 0 else ""
    if result.returncode != 0:
        raise StepFailed(
            f"detect-secrets exited {result.returncode}:\n{result.output[-1500:]}",
            "fix what the message above names (a broken baseline shows up here too), then re-run",
        )
    try:
        found = json.loads(output)["results"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise StepFailed(f"detect-secrets printed no JSON results ({exc})", "run it by hand to see why") from exc
    accepted = set()
    for entries in (baseline or {}).get("results", {}).values():
        for entry in entries:
            if entry.get("is_secret") is not True:
                accepted.add((entry["filename"], entry["hashed_secret"]))
    findings = [
        Finding(entry["filename"], int(entry["line_number"]), entry["type"])
        for entries in found.values()
        for entry in entries
        if (entry["filename"], entry["hashed_secret"]) not in accepted
    ]
    return sorted(findings)


def check(project: Project) -> int:
    """Scan, and fail with every finding; returns how many files were scanned."""
    files = git_files(project)
    findings = scan(project, files)
    if findings:
        listing = "\n".join(f"  {finding}" for finding in findings)
        raise StepFailed(
            f"detect-secrets found {len(findings)} possible secret(s) in files that would be committed:\n{listing}",
            FIX,
        )
    return len(files)


def run_step(project: Project) -> str:
    # The scan reads conflicted files as text (both sides get scanned); only the baseline is parsed.
    conflicts.refuse(project, lambda name: name == BASELINE_FILE)
    count = check(project)
    return f"no secrets in the {count} files that would be committed (detect-secrets, {BASELINE_FILE})"
