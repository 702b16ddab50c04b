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
    python <template>/tasks/run.py railway-iac --stage before|after --from REF  # retire railway.json

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
    import step_railway_iac
    import step_secret_check
    import step_secrets
    from common import Project, StepFailed, StepSkipped, rerun_command, say, write_status
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


OK, FAILED, SKIPPED, HELD = "ok", "FAILED", "skipped", "held"


def run_one(name: str, step: Callable[[Project], str], project: Project, on_failure: str) -> str:
    """Run one step and report it: OK, FAILED, SKIPPED, or HELD back by an update's conflicts."""
    project.notes.clear()
    try:
        message = step(project)
    except conflicts.Conflicted as held:
        say(name, f"not run: it reads {held}, which still hold conflict markers from the update")
        return HELD
    except StepSkipped as skipped:
        say(name, f"skipped: {skipped.reason}")
        if skipped.later:
            say(name, f"to do it later, from the project folder: {skipped.later}")
        return SKIPPED
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
        return FAILED
    finally:
        for note in project.notes:
            say(name, f"note: {note}")
    say(name, message)
    return OK


def _git_after_failures(failed: list[str]) -> Callable[[Project], str]:
    """The git step once an earlier step failed: no first commit that looks finished."""

    def skip(project: Project) -> str:
        raise StepSkipped(
            f"{', '.join(failed)} failed, so the project is not committed (a first commit would look "
            "finished); fix the failures, re-run them, then run the git step",
            rerun_command("git", project),
        )

    return skip


def summary(sequence: str, outcomes: dict[str, str], project: Project) -> str:
    """Every step of a sequence with its outcome, and the command that re-runs each failure."""
    width = max(len(name) for name in outcomes)
    lines = ["summary:"]
    for name, outcome in outcomes.items():
        lines.append(f"  {outcome:<8} {name:<{width}}".rstrip())
        if outcome == FAILED:
            lines.append(f"           re-run: {rerun_command(name, project)}")
    failed = [name for name, outcome in outcomes.items() if outcome == FAILED]
    held = [name for name, outcome in outcomes.items() if outcome == HELD]
    if failed:
        lines.append(f"NOT READY: {len(failed)} step(s) failed ({', '.join(failed)}); see each one above.")
    elif held:
        lines.append(f"NOT READY: {', '.join(held)} held back by the update's conflicts; see the next line.")
    else:
        lines.append("every step passed or had nothing to do: the project is ready.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, *SEQUENCES, "move", "railway-iac"])
    parser.add_argument("paths", nargs="*", help="for move: OLD NEW, relative to the project")
    parser.add_argument("--from", dest="ref", default="", help="for railway-iac: the release updated from")
    parser.add_argument("--stage", choices=["before", "after"], default="after", help="for railway-iac")
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
        ok = run_one("move", lambda p: step_move.run_step(p, old, new), project, args.on_failure) != FAILED
    elif args.step == "railway-iac":
        stage = step_railway_iac.before if args.stage == "before" else step_railway_iac.after
        ok = run_one("railway-iac", lambda p: stage(p, args.ref), project, args.on_failure) != FAILED
    else:
        if args.paths:
            parser.error(f"{args.step} takes no paths")
        names = SEQUENCES.get(args.step, [args.step])
        left = conflicts.find(project) if args.step == "after-update" else {}
        if left:  # first, so the steps' own notes below read as consequences
            listing = "\n".join(f"    {item}" for item in conflicts.describe(left).split("; "))
            say(args.step, f"the update left conflicts in {len(left)} file(s):\n{listing}")
        outcomes: dict[str, str] = {}
        for name in names:
            failed = [done for done, outcome in outcomes.items() if outcome == FAILED]
            step = _git_after_failures(failed) if name == "git" and failed else STEPS[name]
            outcomes[name] = run_one(name, step, project, args.on_failure)
        held = [name for name, outcome in outcomes.items() if outcome == HELD]
        # Conflicts are what an update may leave, not a failure of it: Copier then finishes
        # and prints its after-update message. A step run by hand on a conflicted file fails.
        ok = FAILED not in outcomes.values() and (args.step == "after-update" or not held)
        if len(names) > 1:
            say(args.step, summary(args.step, outcomes, project))
        if left or held:
            say(
                args.step,
                f"next: {conflicts.HOW_TO_RESOLVE}, and run what "
                + ("was held back" if held else "checks the merged files")
                + f" ({', '.join(held or names)}):\n    {rerun_command(args.step, project)}",
            )
        # Read by the closing message of `copier copy`, which Copier prints only when the task
        # exits 0: with --on-failure exit and a failure there is no message, so no file either.
        if args.step == "all" and (ok or args.on_failure == "report"):
            write_status(project.root, [name for name, outcome in outcomes.items() if outcome == FAILED])
    if ok or args.on_failure == "report":
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
