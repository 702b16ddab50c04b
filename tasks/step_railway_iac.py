"""Step `railway-iac --stage before|after --from REF`: an update from a release that shipped
`railway.json` retires it, since `.railway/railway.ts` (Railway Infrastructure as Code) replaces it.

Railway stops reading Config as Code files on 2026-12-01, and `railway config plan` refuses to
manage a service while one is there. Copier removes a file the template no longer renders, the
user's edits to it included, without a word. So the before stage renders `railway.json` as
release REF shipped it for the project's answers and compares: the user's edits are printed and
kept as a diff inside .git. The after stage says the file is gone, prints those edits (the whole
file stays in git: `git show HEAD:railway.json`) and the steps on Railway's side. A
`railway.json` of the user's own that Copier did not remove is left alone and reported.
Running it again finds nothing to do.
"""

from __future__ import annotations

import difflib
import sys
import tempfile
from pathlib import Path

import yaml
from common import TEMPLATE_DIR, Project, StepSkipped, clean_env, run, which

LEGACY = "railway.json"
RAILWAY_STEPS = """on Railway, once per environment (docs/deploy/railway.md, "Migrating from railway.json"):
  1. commit this update, so the repository has .railway/railway.ts and no railway.json;
  2. in the service's Settings, clear the config file path if one is set (Railway reads no
     railway.json from then on);
  3. set every variable the service has that .railway/railway.ts does not declare into its `env`
     (an apply deletes undeclared variables; the plan lists them as destructive);
  4. railway config plan: expect only the settings .railway/railway.ts now owns;
  5. scripts/deploy.sh railway staging (plan, apply, deploy), then production."""


def _render_old(project: Project, ref: str) -> str | None:
    """railway.json as release ref rendered it for these answers, or None when it cannot be had."""
    answers = {k: v for k, v in project.answers.items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory(prefix="fd-railway-") as tmp:
        data_file = Path(tmp) / "answers.yml"
        data_file.write_text(yaml.safe_dump(answers))
        dest = Path(tmp) / "old"
        argv = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--skip-tasks", "--quiet"]
        argv += ["--vcs-ref", ref, "--data-file", str(data_file), str(TEMPLATE_DIR), str(dest)]
        result = run(argv, cwd=Path(tmp), kind="sync", env=clean_env(), what=f"render {LEGACY} of {ref}")
        if result.returncode != 0 or not (dest / LEGACY).is_file():
            project.note(f"could not render {LEGACY} of release {ref}: {result.output[-400:]}")
            return None
        return (dest / LEGACY).read_text()


def _git(project: Project, *args: str) -> tuple[int, str]:
    git = which("git")
    if not git:
        return 127, ""
    result = run([git, *args], cwd=project.root, kind="git")
    return result.returncode, result.stdout


def _edits_file(project: Project) -> Path | None:
    """Where the before stage leaves the user's edits for the after stage: inside .git, out of the tree."""
    code, out = _git(project, "rev-parse", "--absolute-git-dir")
    return Path(out.strip()) / "fastapi-deploy-railway-json.diff" if code == 0 and out.strip() else None


def before(project: Project, ref: str) -> str:
    """Before Copier merges: compare railway.json with what release ref shipped, keep any edits."""
    legacy = project.root / LEGACY
    if "railway" not in (project.answers.get("platforms") or []) or not legacy.is_file():
        raise StepSkipped(f"no {LEGACY} to compare")
    shipped = _render_old(project, ref) if ref else None
    if shipped is None:
        raise StepSkipped(f"{LEGACY} could not be compared with release {ref or '(unknown)'}")
    mine = legacy.read_text()
    store = _edits_file(project)
    if mine == shipped:
        if store:
            store.unlink(missing_ok=True)
        return f"{LEGACY} is as release {ref} shipped it"
    edits = "".join(
        difflib.unified_diff(
            shipped.splitlines(keepends=True),
            mine.splitlines(keepends=True),
            f"{LEGACY} (release {ref})",
            f"{LEGACY} (yours)",
        )
    )
    if store:
        store.write_text(edits)
    return f"{LEGACY} has edits of yours; they are listed after the update:\n{edits}"


def after(project: Project, ref: str) -> str:
    """After the update: say what became of railway.json and what to do on Railway's side."""
    if "railway" not in (project.answers.get("platforms") or []):
        raise StepSkipped("Railway is not one of this project's platforms")
    legacy = project.root / LEGACY
    had = _git(project, "cat-file", "-e", f"HEAD:{LEGACY}")[0] == 0
    store = _edits_file(project)
    edits = store.read_text() if store and store.is_file() else ""
    if store:
        store.unlink(missing_ok=True)
    if legacy.is_file():
        return (
            f"{LEGACY} is still here, and Railway reads it no more (Config as Code ends 2026-12-01; "
            f"`railway config plan` refuses a service it configures). Move its settings into "
            f".railway/railway.ts, delete it, then\n{RAILWAY_STEPS}"
        )
    if not had:
        return f"no {LEGACY}: nothing to retire (.railway/railway.ts is Railway's configuration)"
    if edits:
        return (
            f"removed {LEGACY}, which had edits of yours (`git show HEAD:{LEGACY}` shows the file). "
            f"Carry them into .railway/railway.ts (docs/deploy/railway.md maps each setting), then\n"
            f"{RAILWAY_STEPS}\nYour edits:\n{edits}"
        )
    return f"removed {LEGACY} (as release {ref} shipped it): .railway/railway.ts replaces it; now\n{RAILWAY_STEPS}"
