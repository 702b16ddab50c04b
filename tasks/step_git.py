"""Step `git`: `git init` and a first commit (answer init_git), with .env untracked.

Idempotent: a repository that already has a commit is left alone, and a project generated inside
another repository gets no nested one. The files are scanned for secrets right before the commit,
so a secret never reaches the history even when the secret-check step was skipped or failed.
"""

from __future__ import annotations

from pathlib import Path

from common import Project, StepFailed, run, which
from step_secret_check import check

SECRET_FILES = (".env",)


def run_step(project: Project) -> str:
    if not project.answers.get("init_git", True):
        return "init_git is false: no repository created"
    git = which("git")
    if git is None:
        raise StepFailed("git is not on PATH", "install git, then re-run this step (or answer init_git=false)")

    def git_run(*args: str, what: str = "") -> str:
        result = run([git, *args], cwd=project.root, kind="git", what=what)
        if result.returncode != 0:
            raise StepFailed(
                f"`git {' '.join(args)}` exited {result.returncode}:\n{result.output[-1500:]}",
                "fix what git says above (a commit hook or commit signing can refuse), then re-run",
            )
        return result.stdout

    top = run([git, "rev-parse", "--show-toplevel"], cwd=project.root, kind="git")
    if top.returncode == 0:
        toplevel = Path(top.stdout.strip()).resolve()
        if toplevel != project.root.resolve():
            return f"the project is inside the repository {toplevel}: commit it there (no nested repository made)"
        if run([git, "rev-parse", "--verify", "-q", "HEAD"], cwd=project.root, kind="git").returncode == 0:
            return "the repository already has commits: nothing to do"
    else:
        configured = run([git, "config", "--get", "init.defaultBranch"], cwd=project.root, kind="git")
        branch = [] if configured.stdout.strip() else ["-c", "init.defaultBranch=main"]
        git_run(*branch, "init", "-q")

    scanned = check(project)  # raises with the findings: nothing gets staged or committed
    git_run("add", "-A")
    staged_secrets = [name for name in git_run("diff", "--cached", "--name-only", "--", *SECRET_FILES).split() if name]
    if staged_secrets:
        git_run("rm", "--cached", "-q", "--", *staged_secrets)
        raise StepFailed(
            f"{', '.join(staged_secrets)} would be committed: .gitignore does not ignore it",
            "add `.env` to .gitignore (the template's .gitignore does), then re-run this step",
        )
    identity: list[str] = []
    if run([git, "var", "GIT_COMMITTER_IDENT"], cwd=project.root, kind="git").returncode != 0:
        name = str(project.answers.get("author_name") or "fastapi-deploy")
        email = str(project.answers.get("author_email") or "nobody@example.com")
        identity = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
        project.note(
            f"git has no user.name/user.email: the first commit uses the answers ({name} <{email}>); "
            "set yours with `git config --global user.name ...` and `user.email ...`"
        )
    title = project.answers.get("project_name", "the service")
    version = project.answers.get("_commit", "")
    message = f"Generate {title} from fastapi-deploy{f' {version}' if version else ''}"
    git_run(*identity, "commit", "-q", "-m", message, what="the first commit")
    return f"made the first commit ({scanned} files, secret-checked; .env stays untracked)"
