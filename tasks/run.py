"""Post-generation tasks of fastapi-deploy: one entry point, one module per step.

Copier runs it from `_tasks` (after `copier copy`) and `_migrations` (around `copier update`)
with its own interpreter; run it by hand from the project's folder to re-run one step:

    python <template>/tasks/run.py secrets        # .env from .env.example, fresh secrets, mode 600
    python <template>/tasks/run.py lock           # uv lock
    python <template>/tasks/run.py migrations     # initial revision exists and matches the models
    python <template>/tasks/run.py secret-check   # detect-secrets on the files to commit
    python <template>/tasks/run.py git            # git init and the first commit (init_git)
    python <template>/tasks/run.py all            # the five, in that order (what a copy runs)
    python <template>/tasks/run.py after-update   # secrets, lock, secret-check (after an update)
    python <template>/tasks/run.py move OLD NEW   # follow a path the template moved (before an update)

Every step is idempotent. A failure names the step, the cause, the fix and the command that
re-runs that step alone, and the exit status is 1 (2 for a usage error).

Copier deletes a project it has just created when a task exits non-zero (unless `--no-cleanup`);
`--on-failure report`, which copier.yml passes in that case, prints the failure the same way and
exits 0 so the generated files stay in place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

try:
    import conflicts
    import step_git
    import step_lock
    import step_migrations
    import step_move
    import step_secret_check
    import step_secrets
    from common import Project, StepFailed, StepSkipped, rerun_command, say
except ImportError as missing:  # another Python than Copier's: say which one works
    here = Path(__file__).resolve()
    sys.exit(
        f"[fastapi-deploy] {missing}: the tasks need plumbum and PyYAML, which Copier's own "
        f"interpreter has. Run them with it (`copier --version` is installed in that environment), "
        f"or with: uv run --no-project --with plumbum --with pyyaml python {here} {' '.join(sys.argv[1:])}"
    )

STEPS: dict[str, Callable[[Project], str]] = {
    "secrets": step_secrets.run_step,
    "lock": step_lock.run_step,
    "migrations": step_migrations.run_step,
    "secret-check": step_secret_check.run_step,
    "git": step_git.run_step,
}
SEQUENCES = {
    "all": ["secrets", "lock", "migrations", "secret-check", "git"],
    "after-update": ["secrets", "lock", "secret-check"],
}


def run_one(name: str, step: Callable[[Project], str], project: Project, on_failure: str) -> bool | None:
    """Run one step and report it; True when it did not fail, None when conflicts held it back."""
    project.notes.clear()
    try:
        message = step(project)
    except conflicts.Conflicted as held:
        say(name, f"not run: it reads {held}, which still hold conflict markers from the update")
        return None
    except StepSkipped as skipped:
        say(name, f"skipped: {skipped.reason}")
        if skipped.later:
            say(name, f"to do it later, from the project folder: {skipped.later}")
        return True
    except StepFailed as failure:
        block = [
            f"FAILED: {failure.problem}",
            f"  fix: {failure.fix}",
            "  re-run this step alone:",
            f"    {rerun_command(name, project)}",
            "  The generated files are in place.",
        ]
        if on_failure == "report":
            block.append(
                "  (Copier would delete the new project if this task exited non-zero, so it exits 0: "
                "pass --no-cleanup to `copier copy` to make task failures fail the copy.)"
            )
        say(name, "\n".join(block))
        return False
    finally:
        for note in project.notes:
            say(name, f"note: {note}")
    say(name, message)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, *SEQUENCES, "move"])
    parser.add_argument("paths", nargs="*", help="for move: OLD NEW, relative to the project")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the project folder (default: here)")
    parser.add_argument(
        "--on-failure",
        choices=["exit", "report"],
        default="exit",
        help="exit: a failed step exits 1; report: print it and exit 0 (keeps Copier from deleting the project)",
    )
    args = parser.parse_args(argv)
    project = Project(args.project.resolve())

    if args.step == "move":
        if len(args.paths) != 2:
            parser.error("move needs OLD and NEW")
        old, new = args.paths
        ok = run_one("move", lambda p: step_move.run_step(p, old, new), project, args.on_failure)
    else:
        if args.paths:
            parser.error(f"{args.step} takes no paths")
        names = SEQUENCES.get(args.step, [args.step])
        left = conflicts.find(project) if args.step == "after-update" else {}
        if left:  # first, so the steps' own notes below read as consequences
            listing = "\n".join(f"    {item}" for item in conflicts.describe(left).split("; "))
            say(args.step, f"the update left conflicts in {len(left)} file(s):\n{listing}")
        results = [run_one(name, STEPS[name], project, args.on_failure) for name in names]
        failed = [name for name, result in zip(names, results, strict=True) if result is False]
        held = [name for name, result in zip(names, results, strict=True) if result is None]
        if len(names) > 1 and failed:
            say(args.step, f"{len(failed)} step(s) failed: {', '.join(failed)} (see above)")
        if left or held:
            say(
                args.step,
                f"next: {conflicts.HOW_TO_RESOLVE}, and run what "
                + ("was held back" if held else "checks the merged files")
                + f" ({', '.join(held or names)}):\n    {rerun_command(args.step, project)}",
            )
        # Conflicts are what an update may leave, not a failure of it: Copier then finishes
        # and prints its after-update message. A step run by hand on a conflicted file fails.
        ok = not failed and (args.step == "after-update" or not held)
    if ok or args.on_failure == "report":
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
