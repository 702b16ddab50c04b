"""The post-generation tasks (tasks/run.py) through Copier's CLI, as a user meets them.

One copy with every task runs once per module (about 20 s: uv lock, uv sync, alembic, detect-secrets,
git); the failure paths use database=none so they lock quickly.
"""

from __future__ import annotations

import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import UV
from tasks_support import (
    NO_DB,
    copier,
    env_values,
    plant_aws_keys,
    sh,
    show,
    task_env,
    tasks,
    tree_digest,
)

PLACEHOLDER = "_your_"
# One worker runs this module, so the copy with every task is made once.
pytestmark = [pytest.mark.xdist_group("tasks"), pytest.mark.slow]  # real tasks: uv lock, git, detect-secrets


@pytest.fixture(scope="module")
def copied(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A project copied with every task (PostgreSQL, the defaults): its folder and Copier's output."""
    dest = tmp_path_factory.mktemp("tasks") / "orders-api"
    result = copier("copy", "--trust", "--defaults", "--data", "project_name=Orders API", template_src, dest)
    assert result.returncode == 0, show(result)
    return dest, result.stderr + result.stdout


def test_copy_writes_env_with_fresh_consistent_secrets_mode_600(copied: tuple[Path, str]) -> None:
    project, output = copied
    env_file = project / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    example, env = env_values(project / ".env.example"), env_values(env_file)
    assert list(env) == list(example), "every variable of .env.example, in its order"
    filled = [name for name, value in example.items() if PLACEHOLDER in value]
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"} <= set(filled)
    for name in filled:
        assert PLACEHOLDER not in env[name], f"{name} kept its placeholder"
    for name, value in example.items():
        if name not in filled:
            assert env[name] == value, f"{name} has no placeholder and must stay as documented"
    assert len(env["SECRET_KEY"]) >= 32
    url = urlsplit(env["DATABASE_URL"])
    assert url.password == env["POSTGRES_PASSWORD"], "DATABASE_URL must use the generated password"
    assert url.username == urlsplit(example["DATABASE_URL"]).username
    assert "[fastapi-deploy secrets] wrote .env (mode 600)" in output


def test_copy_locks_checks_migrations_and_commits_without_secrets(copied: tuple[Path, str]) -> None:
    project, output = copied
    env = task_env()
    assert sh([UV, "lock", "--check"], cwd=project, env=env).returncode == 0, "uv.lock matches pyproject.toml"
    assert "[fastapi-deploy migrations] migrations upgrade a fresh database to head and match the models" in output
    assert "[fastapi-deploy secret-check] no secrets in the" in output
    log = sh(["git", "log", "--format=%s"], cwd=project, env=env)
    version = yaml.safe_load((project / ".copier-answers.yml").read_text()).get("_commit")
    expected = "Generate Orders API from fastapi-deploy" + (f" {version}" if version else "")
    assert log.stdout.splitlines() == [expected], show(log)
    assert sh(["git", "status", "--porcelain"], cwd=project, env=env).stdout == "", "everything committed"
    assert sh(["git", "ls-files", ".env"], cwd=project, env=env).stdout == "", ".env must stay untracked"
    assert "uv.lock" in sh(["git", "ls-files"], cwd=project, env=env).stdout.split()
    history = sh(["git", "log", "--all", "-p", "--format=%H"], cwd=project, env=env).stdout
    answers = (project / ".copier-answers.yml").read_text()
    for name, value in env_values(project / ".env").items():
        if PLACEHOLDER in env_values(project / ".env.example")[name]:
            assert value not in history, f"{name}'s value reached the git history"
            assert value not in answers, f"{name}'s value is in .copier-answers.yml"


def test_rerunning_every_task_changes_nothing(copied: tuple[Path, str]) -> None:
    project, _ = copied
    before = tree_digest(project)
    result = tasks("all", project)
    assert result.returncode == 0, show(result)
    assert tree_digest(project) == before
    for expected in (
        "[fastapi-deploy secrets] kept the existing .env",
        "[fastapi-deploy lock] uv.lock already matches pyproject.toml",
        "[fastapi-deploy git] the repository already has commits: nothing to do",
    ):
        assert expected in result.stderr, show(result)


def test_secrets_are_fresh_per_project_and_consistent_for_mysql(render: Callable[..., Path]) -> None:
    first, second = render(database="mysql"), render(database="mysql")
    for project in (first, second):
        result = tasks("secrets", project)
        assert result.returncode == 0, show(result)
    one, two = env_values(first / ".env"), env_values(second / ".env")
    for name in ("SECRET_KEY", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"):
        assert PLACEHOLDER not in one[name]
        assert one[name] != two[name], f"{name} must be generated afresh for each project"
    assert one["MYSQL_PASSWORD"] != one["MYSQL_ROOT_PASSWORD"]
    assert urlsplit(one["DATABASE_URL"]).password == one["MYSQL_PASSWORD"]
    # A second run keeps the file byte for byte.
    before = (first / ".env").read_bytes()
    again = tasks("secrets", first)
    assert again.returncode == 0 and "kept the existing .env" in again.stderr, show(again)
    assert (first / ".env").read_bytes() == before


def test_planted_aws_keys_fail_the_secret_check_with_file_line_and_kind(render: Callable[..., Path]) -> None:
    project = render(database="none")
    package = yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]
    settings = project / "src" / package / "settings.py"
    key_line, secret_line = plant_aws_keys(settings)
    result = tasks("secret-check", project)
    assert result.returncode == 1, show(result)
    report = result.stderr
    assert "[fastapi-deploy secret-check] FAILED: detect-secrets found" in report
    assert f"src/{package}/settings.py:{key_line}: AWS Access Key" in report
    assert f"src/{package}/settings.py:{secret_line}: AWS Access Key" in report
    assert "# pragma: allowlist secret" in report and "detect-secrets audit .secrets.baseline" in report
    assert "re-run this step alone" in report and "run.py secret-check" in report
    # Recording the findings in the baseline (what `detect-secrets audit` works on) accepts them.
    detect = Path(UV).parent / "detect-secrets"
    recorded = sh(
        [detect, "scan", "--no-verify", "--baseline", ".secrets.baseline", f"src/{package}/settings.py"], cwd=project
    )
    assert recorded.returncode == 0, show(recorded)
    accepted = tasks("secret-check", project)
    assert accepted.returncode == 0, show(accepted)


def test_a_secret_in_the_template_keeps_the_files_and_makes_no_commit(template_src: Path, tmp_path: Path) -> None:
    source = tmp_path / "fastapi-deploy"
    shutil.copytree(template_src, source)
    plant_aws_keys(source / "template" / "src" / "{{package_name}}" / "settings.py.jinja")
    dest = tmp_path / "leaky"
    result = copier("copy", "--trust", "--defaults", *NO_DB, source, dest)
    # Copier deletes a new project when a task exits non-zero: the steps report and exit 0.
    assert result.returncode == 0, show(result)
    output = result.stderr
    assert "[fastapi-deploy secret-check] FAILED" in output, show(result)
    assert "src/my_service/settings.py:" in output and ": AWS Access Key" in output
    assert "run.py secret-check" in output
    assert "[fastapi-deploy git] skipped: secret-check failed" in output, "no commit after a failed step"
    assert (dest / "pyproject.toml").is_file() and (dest / ".env").is_file(), "generated files stay"
    head = sh(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=dest)
    assert head.returncode != 0, "no commit may hold the secret"
    # Run alone later, the git step scans again and still refuses to commit the secret.
    again = tasks("git", dest)
    assert again.returncode == 1 and "[fastapi-deploy git] FAILED" in again.stderr, show(again)
    assert sh(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=dest).returncode != 0


def test_missing_uv_fails_the_lock_step_and_says_how_to_rerun_it(template_src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "no-uv"
    bin_dir = tmp_path / "bin"  # a PATH with git and nothing else
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    no_uv = task_env(PATH=str(bin_dir))
    assert shutil.which("uv", path=no_uv["PATH"]) is None
    # --no-cleanup: a failed task fails the copy, and the files stay.
    result = copier("copy", "--trust", "--defaults", "--no-cleanup", *NO_DB, template_src, dest, env=no_uv)
    assert result.returncode != 0, show(result)
    assert "[fastapi-deploy lock] FAILED: uv is not on PATH" in result.stderr, show(result)
    assert "install uv" in result.stderr and "run `uv lock` in the project folder" in result.stderr
    assert "re-run this step alone" in result.stderr and "run.py lock" in result.stderr
    assert (dest / "pyproject.toml").is_file() and (dest / ".env").is_file()
    assert not (dest / "uv.lock").exists()
    # The command the message gives works once uv is back.
    rerun = tasks("lock", dest)
    assert rerun.returncode == 0 and "created uv.lock" in rerun.stderr, show(rerun)
    assert (dest / "uv.lock").is_file()


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_lock_never_hangs_on_a_silent_index_and_names_an_unreachable_one(
    render: Callable[..., Path], silent_index: str
) -> None:
    project = render(database="none")
    started = time.monotonic()
    stalled = tasks("lock", project, env=task_env(UV_DEFAULT_INDEX=silent_index, FD_TASK_TIMEOUT="5", UV_NO_CACHE="1"))
    assert time.monotonic() - started < 60, "the lock step must give up on its own"
    assert stalled.returncode == 1, show(stalled)
    assert "did not finish within 5 s and was stopped" in stalled.stderr, show(stalled)
    assert "run `uv lock` in the project folder" in stalled.stderr or "re-run" in stalled.stderr

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/simple"
    unreachable = tasks("lock", project, env=task_env(UV_DEFAULT_INDEX=refused, UV_NO_CACHE="1"))
    assert unreachable.returncode == 1, show(unreachable)
    assert "could not reach the package index" in unreachable.stderr, show(unreachable)
    assert "run `uv lock` in the project folder" in unreachable.stderr
    assert not (project / "uv.lock").exists()


def test_without_trust_copier_refuses_and_the_docs_say_what_to_do(
    template_src: Path, tmp_path: Path, render: Callable[..., Path]
) -> None:
    dest = tmp_path / "untrusted"
    result = copier("copy", "--defaults", template_src, dest)
    assert result.returncode != 0
    refusal = result.stderr
    assert "tasks" in refusal and "--trust" in refusal, show(result)
    assert not dest.exists(), "nothing may be written without --trust"
    docs = (render() / "docs" / "tasks.md").read_text()
    first_line = next(line for line in refusal.splitlines() if "unsafe feature" in line).strip()
    assert first_line in docs, "docs/tasks.md must quote Copier's refusal"
    assert "copier copy --trust" in docs and "--skip-tasks" in docs


def test_migrations_step_creates_a_missing_initial_revision_and_catches_a_model_without_one(
    render: Callable[..., Path],
) -> None:
    project = render(database="sqlite")
    assert tasks("lock", project).returncode == 0
    versions = project / "migrations" / "versions"
    for revision in versions.glob("*.py"):
        revision.unlink()
    created = tasks("migrations", project)
    assert created.returncode == 0, show(created)
    assert "created the initial revision from the models" in created.stderr
    made = list(versions.glob("*.py"))
    assert len(made) == 1 and "op.create_table(" in made[0].read_text() and '"items"' in made[0].read_text()
    again = tasks("migrations", project)
    assert again.returncode == 0 and "created" not in again.stderr, show(again)
    assert list(versions.glob("*.py")) == made

    models = next(project.glob("src/*/models.py"))
    text = models.read_text()
    anchor = "    quantity: Mapped[int]"
    assert anchor in text
    models.write_text(text.replace(anchor, "    colour: Mapped[str | None] = mapped_column(String(20))\n" + anchor))
    drifted = tasks("migrations", project)
    assert drifted.returncode == 1, show(drifted)
    assert "the models and the migrations differ" in drifted.stderr and "colour" in drifted.stderr
    assert "uv run alembic revision --autogenerate" in drifted.stderr and "run.py migrations" in drifted.stderr


MAXIMAL = {
    "platforms": ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"],
    "domain": "api.example.com",
    "redis": True,
    "worker": "celery",
    "sentry": True,
    "metrics": True,
    "reverse_proxy": "traefik",
}


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param({}, id="defaults"),
        pytest.param(MAXIMAL, id="every-platform-and-extra"),
        pytest.param(
            {"database": "mysql", "ci": "gitlab", "platforms": ["vm"], "reverse_proxy": "nginx"}, id="mysql-gitlab-vm"
        ),
        pytest.param(
            {"database": "sqlite", "server": "gunicorn", "redis": True, "worker": "arq", "platforms": ["vm"]},
            id="sqlite-gunicorn-arq",
        ),
    ],
)
def test_every_rendered_file_passes_the_secret_check(render: Callable[..., Path], answers: dict[str, object]) -> None:
    project = render(**answers)
    result = tasks("secret-check", project)
    assert result.returncode == 0, show(result)


def test_pre_commit_hooks_pass_and_catch_a_planted_secret(copied: tuple[Path, str], tmp_path: Path) -> None:
    project = tmp_path / "hooks"
    shutil.copytree(copied[0], project, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    pre_commit = [UV, "tool", "run", "--from", "pre-commit==4.7.0", "pre-commit"]
    clean = sh([*pre_commit, "run", "--all-files"], cwd=project)
    assert clean.returncode == 0, show(clean)
    for hook in ("ruff check", "ruff format", "mypy", "detect-secrets", "hadolint", "shellcheck"):
        assert any(line.startswith(hook) and line.endswith("Passed") for line in clean.stdout.splitlines()), (
            f"hook {hook} did not run and pass\n{show(clean)}"
        )
    package = yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]
    plant_aws_keys(project / "src" / package / "settings.py")
    sh(["git", "add", "-A"], cwd=project)
    caught = sh([*pre_commit, "run", "detect-secrets", "--all-files"], cwd=project)
    assert caught.returncode != 0, show(caught)
    assert f"src/{package}/settings.py" in caught.stdout and "AWS Access Key" in caught.stdout


def test_secrets_step_lists_variables_env_lacks_and_leaves_env_alone(render: Callable[..., Path]) -> None:
    project = render(database="none")
    assert tasks("secrets", project).returncode == 0
    env_file = project / ".env"
    env_file.write_text("".join(line for line in env_file.read_text().splitlines(True) if "LOG_LEVEL" not in line))
    before = env_file.read_bytes()
    result = tasks("secrets", project)
    assert result.returncode == 0, show(result)
    assert "note: .env lacks LOG_LEVEL" in result.stderr and "kept the existing .env" in result.stderr
    assert env_file.read_bytes() == before


def test_move_step_carries_tracked_and_untracked_files_and_keeps_taken_names(tmp_path: Path) -> None:
    project = tmp_path / "moved"
    old = project / "migrations" / "versions"
    old.mkdir(parents=True)
    (old / "0001_tracked.py").write_text("tracked\n")
    (old / "__pycache__").mkdir()
    (old / "__pycache__" / "0001_tracked.cpython-312.pyc").write_bytes(b"cache")
    sh(["git", "init", "-q"], cwd=project)
    sh(["git", "add", "-A"], cwd=project)
    sh(["git", "commit", "-q", "-m", "tracked"], cwd=project)
    (old / "0002_untracked.py").write_text("untracked\n")
    (old / "0003_taken.py").write_text("mine\n")
    new = project / "migrations" / "revisions"
    new.mkdir()
    (new / "0003_taken.py").write_text("theirs\n")

    result = tasks("move", project, "migrations/versions", "migrations/revisions")
    assert result.returncode == 0, show(result)
    assert "moved 2 file(s)" in result.stderr and "left migrations/versions/0003_taken.py in place" in result.stderr
    assert (new / "0001_tracked.py").read_text() == "tracked\n"
    assert (new / "0002_untracked.py").read_text() == "untracked\n"
    assert (new / "0003_taken.py").read_text() == "theirs\n" and (old / "0003_taken.py").read_text() == "mine\n"
    assert not (old / "__pycache__").exists()
    staged = sh(["git", "status", "--porcelain"], cwd=project).stdout
    assert "R  migrations/versions/0001_tracked.py -> migrations/revisions/0001_tracked.py" in staged
    again = tasks("move", project, "migrations/versions", "migrations/revisions")
    assert again.returncode == 0 and "moved 0 file(s)" in again.stderr, show(again)
