"""`copier update`: template releases arrive, the user's work survives, secrets stay put.

The fixture builds a git repository of the template with two releases: 0.1.0 is the working
tree as it is; 0.2.0 changes the Dockerfile, and moves the Alembic revisions
folder (migrations/versions -> migrations/revisions) with a `_migrations` entry that carries the
user's own revisions along. A project generated from 0.1.0 with every task, then changed by its
user and committed, is updated to 0.2.0 non-interactively.
"""

from __future__ import annotations

import json
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import UV, render_template
from tasks_support import (
    MARKER_RE,
    NO_DB,
    copier,
    env_values,
    git,
    release_repo,
    sh,
    show,
    tag_release,
    task_env,
    tasks,
)

RELEASE_LABEL = 'LABEL org.opencontainers.image.version="0.2.0"'
MIGRATIONS_DIR = "{% if has_db %}migrations{% endif %}"
MOVE_ENTRY = """  # 0.2.0 renamed migrations/versions: the user's revisions move along before the merge.
  - version: "0.2.0"
    when: "{{ _stage == 'before' }}"
    command: ["{{ _copier_python }}", "{{ _copier_conf.src_path }}/tasks/run.py", "move",
              "migrations/versions", "migrations/revisions"]
"""
# 0.2.0 adds a requirement at the end of what the template owns in each list of pyproject.toml,
# the very place where an unsorted list gets the user's `uv add`: the hardest case for a merge.
RELEASE_REQUIREMENTS = {"dependencies = [": '"anyio>=4.6"', "dev = [": '"pluggy>=1.5"'}
USER_ADDS = {"dependencies": "humanize", "dev": "pytest-cov"}
# 0.2.0 also raises a bound the template owns and rewords a comment of .env.example: a user who
# changed those very lines gets a conflict, which every after-update step must notice first.
FASTAPI_RE = re.compile(r'"fastapi>=[0-9.]+"')
RELEASE_FASTAPI, USER_FASTAPI = '"fastapi>=0.116"', "fastapi>=0.120"
LOG_LEVEL_HELP = ("# DEBUG | INFO | WARNING | ERROR\n", "# DEBUG | INFO | WARNING | ERROR (INFO unless set)\n")
# One worker runs this module, so the two-release template repository is built once.
pytestmark = pytest.mark.xdist_group("update")


@pytest.fixture(scope="module")
def template_repo(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of the template, tagged 0.1.0 (as it is) and 0.2.0 (changed)."""
    repo = release_repo(template_src, tmp_path_factory.mktemp("releases") / "fastapi-deploy")
    tag_release(repo, "0.1.0", "Release 0.1.0")

    template = repo / "template"
    dockerfile = template / "Dockerfile.jinja"
    dockerfile.write_text(dockerfile.read_text().rstrip("\n") + f"\n{RELEASE_LABEL}\n")

    pyproject = template / "pyproject.toml.jinja"
    text = _add_template_requirements(pyproject.read_text())
    assert len(FASTAPI_RE.findall(text)) == 1
    pyproject.write_text(FASTAPI_RE.sub(RELEASE_FASTAPI, text))
    env_example = template / ".env.example.jinja"
    text = env_example.read_text()
    assert text.count(LOG_LEVEL_HELP[0] + "LOG_LEVEL=INFO\n") == 1
    env_example.write_text(text.replace(*LOG_LEVEL_HELP))

    migrations = template / MIGRATIONS_DIR
    (migrations / "versions").rename(migrations / "revisions")
    alembic_ini = template / "{% if has_db %}alembic.ini{% endif %}.jinja"
    text = alembic_ini.read_text()
    assert "script_location = %(here)s/migrations\n" in text
    alembic_ini.write_text(
        text.replace(
            "script_location = %(here)s/migrations\n",
            "script_location = %(here)s/migrations\nversion_locations = %(here)s/migrations/revisions\n",
        )
    )
    copier_yml = repo / "copier.yml"
    text = copier_yml.read_text()
    assert text.count("\n_migrations:\n") == 1
    copier_yml.write_text(text.replace("\n_migrations:\n", "\n_migrations:\n" + MOVE_ENTRY))

    return tag_release(repo, "0.2.0", "Release 0.2.0: version label, revisions folder")


def _add_template_requirements(text: str) -> str:
    """Append RELEASE_REQUIREMENTS as the last requirement the template writes in each list."""
    lines = text.splitlines(keepends=True)
    for opening, requirement in RELEASE_REQUIREMENTS.items():
        start = lines.index(opening + "\n")
        end = start + 1
        while lines[end].lstrip().startswith(("{%", '"')):  # Jinja blocks and requirements
            end += 1
        lines.insert(end, f"    {requirement},\n")
    return "".join(lines)


def _requirement_names(pyproject: Path) -> dict[str, list[str]]:
    data = tomllib.loads(pyproject.read_text())
    lists = {"dependencies": data["project"]["dependencies"], "dev": data["dependency-groups"]["dev"]}
    return {key: [re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0] for req in reqs] for key, reqs in lists.items()}


def _user_changes(project: Path, package: str) -> dict[str, bytes]:
    """What a user does after generating: code, a dependency, a migration, .env. Returns the files."""
    env = task_env()
    models = project / "src" / package / "models.py"
    text = models.read_text()
    anchor = "    quantity: Mapped[int]"
    assert anchor in text
    models.write_text(text.replace(anchor, "    note: Mapped[str | None] = mapped_column(String(200))\n" + anchor))
    main = project / "src" / package / "main.py"
    main.write_text(main.read_text() + '\n\n# Added by the user.\nUSER_MARK = "kept across updates"\n')
    (project / "src" / package / "pricing.py").write_text(
        '"""A module of the user\'s own."""\n\nimport humanize\n\n\n'
        "def label(amount: int) -> str:\n    return humanize.intcomma(amount)\n"
    )
    (project / "tests" / "test_pricing.py").write_text(
        f"from {package}.pricing import label\n\n\ndef test_label() -> None:\n"
        '    assert label(1234567) == "1,234,567"\n'
    )
    # The way the README says to add a dependency (uv add also locks and syncs).
    for args in (["add", USER_ADDS["dependencies"]], ["add", "--dev", USER_ADDS["dev"]]):
        result = sh([UV, *args], cwd=project, env=env)
        assert result.returncode == 0, show(result)
    # A migration made the way the README says, on a scratch SQLite database.
    scratch = {"DATABASE_URL": f"sqlite:///{project.parent / 'scratch.db'}"}
    for args in (["upgrade", "head"], ["revision", "--autogenerate", "-m", "add item note"]):
        result = sh([UV, "run", "alembic", *args], cwd=project, env=task_env(**scratch))
        assert result.returncode == 0, show(result)
    revisions = sorted((project / "migrations" / "versions").glob("*add_item_note.py"))
    assert len(revisions) == 1 and "add_column" in revisions[0].read_text()
    env_file = project / ".env"
    env_file.write_text(env_file.read_text().replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG") + "USER_ONLY=1\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "User work: a note on items, pricing, humanize")
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in [main, models, revisions[0], project / "src" / package / "pricing.py", env_file]
    }


def _locked(project: Path, name: str) -> dict[str, Any]:
    """The project's own package entry in uv.lock."""
    lock = tomllib.loads((project / "uv.lock").read_text())
    (own,) = [package for package in lock["package"] if package["name"] == name]
    return own


def _markers(root: Path) -> dict[str, int]:
    counts = {}
    for path in root.rglob("*"):
        if path.is_file() and not {".git", ".venv"} & set(path.relative_to(root).parts):
            counts[path.relative_to(root).as_posix()] = len(MARKER_RE.findall(path.read_bytes()))
    return counts


@pytest.mark.slow
def test_update_brings_the_release_and_keeps_the_users_work(template_repo: Path, tmp_path: Path) -> None:
    project = tmp_path / "orders-api"
    copied = copier("copy", "--trust", "--defaults", "--vcs-ref", "0.1.0", template_repo, project)
    assert copied.returncode == 0, show(copied)
    assert "[fastapi-deploy git] made the first commit" in copied.stderr, show(copied)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    package = answers["package_name"]
    assert answers["_commit"] == "0.1.0"
    secrets_before = env_values(project / ".env")
    user = _user_changes(project, package)
    env_bytes = (project / ".env").read_bytes()
    markers_before = _markers(project)

    updated = copier("update", "--defaults", "--trust", "--vcs-ref", "0.2.0", cwd=project)
    assert updated.returncode == 0, show(updated)
    output = updated.stderr

    # The release arrived.
    assert RELEASE_LABEL in (project / "Dockerfile").read_text()
    assert "version_locations = %(here)s/migrations/revisions" in (project / "alembic.ini").read_text()
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "0.2.0"

    # The move migration carried the user's revision, and nothing is left in the old folder.
    assert "[fastapi-deploy move] moved" in output, show(updated)
    assert not (project / "migrations" / "versions").exists()
    for name, content in user.items():
        moved = name.replace("migrations/versions/", "migrations/revisions/")
        assert (project / moved).read_bytes() == content, f"{name} changed in the update"
    assert sorted(p.name for p in (project / "migrations" / "revisions").glob("*.py")) == sorted(
        [Path(n).name for n in user if "/versions/" in n] + ["20250101_0001_create_items.py"]
    )
    # pyproject.toml merged: the user's `uv add`s and the release's requirements are all there,
    # and the after-update lock step locked the merged file.
    names = _requirement_names(project / "pyproject.toml")
    for key, requirement in zip(names, RELEASE_REQUIREMENTS.values(), strict=True):
        assert {USER_ADDS[key], requirement.strip('"').split(">=")[0]} <= set(names[key]), names
    own = _locked(project, answers["project_slug"])
    assert {"humanize", "anyio"} <= {dep["name"] for dep in own["dependencies"]}
    assert {"pytest-cov", "pluggy"} <= {dep["name"] for dep in own["dev-dependencies"]["dev"]}
    assert RELEASE_FASTAPI in (project / "pyproject.toml").read_text()
    assert LOG_LEVEL_HELP[1] in (project / ".env.example").read_text()

    # No conflicts, no rejects; .env byte for byte, secrets not regenerated nor recorded.
    assert sh(["git", "ls-files", "--unmerged"], cwd=project).stdout == ""
    assert not list(project.rglob("*.rej"))
    after = _markers(project)
    added = {name: count for name, count in after.items() if count > markers_before.get(name, 0)}
    assert not added, f"conflict markers appeared in {added}"
    assert (project / ".env").read_bytes() == env_bytes
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    answers_text = (project / ".copier-answers.yml").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        assert env_values(project / ".env")[name] == secrets_before[name]
        assert secrets_before[name] not in answers_text
    assert "[fastapi-deploy secrets] kept the existing .env" in output
    assert "[fastapi-deploy secret-check] no secrets" in output

    # The project's own suite passes, the user's revision included (alembic check).
    tests = sh([UV, "run", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert tests.returncode == 0, show(tests)
    assert " passed" in tests.stdout


@pytest.mark.slow
def test_conflicts_are_named_first_and_no_step_reads_them(template_repo: Path, tmp_path: Path) -> None:
    """The user changed the very lines 0.2.0 changes: Copier leaves conflicts, the steps say so."""
    project = tmp_path / "orders-api"
    copied = copier("copy", "--trust", "--defaults", *NO_DB, "--vcs-ref", "0.1.0", template_repo, project)
    assert copied.returncode == 0, show(copied)
    result = sh([UV, "add", USER_FASTAPI], cwd=project)  # raises a bound the template owns
    assert result.returncode == 0, show(result)
    example = project / ".env.example"
    example.write_text(example.read_text().replace("LOG_LEVEL=INFO\n", "LOG_LEVEL=DEBUG\n"))
    git(project, "commit", "-q", "-am", "User work: a newer FastAPI, DEBUG logs by default")
    lock_before = (project / "uv.lock").read_bytes()

    updated = copier("update", "--defaults", "--trust", "--vcs-ref", "0.2.0", cwd=project)
    # Conflicts are an outcome of the update, not a failure: Copier finishes and says so.
    assert updated.returncode == 0, show(updated)
    output = updated.stderr + updated.stdout
    assert "is updated from fastapi-deploy" in output, show(updated)
    unmerged = {line.split("\t")[1] for line in git(project, "ls-files", "--unmerged").splitlines()}
    assert unmerged == {"pyproject.toml", ".env.example"}, show(updated)

    # Named first, with the lines of their markers, before any step runs.
    summary = "[fastapi-deploy after-update] the update left conflicts in 2 file(s):"
    assert summary in output, show(updated)
    first = output.index(summary)
    assert first < output.index("[fastapi-deploy secrets]") < output.index("[fastapi-deploy lock]")
    for name in unmerged:
        starts = [
            n for n, line in enumerate((project / name).read_text().splitlines(), 1) if line.startswith("<<<<<<<")
        ]
        assert len(starts) == 1
        assert f"{name} (conflict at line {starts[0]})" in output, show(updated)
    # No step read a conflicted file: the lock is as it was, no marker became a variable name.
    assert "[fastapi-deploy lock] not run: it reads pyproject.toml" in output, show(updated)
    assert "[fastapi-deploy secrets] not run: it reads .env.example" in output, show(updated)
    assert "=======" not in "".join(line for line in output.splitlines() if "note:" in line)
    assert (project / "uv.lock").read_bytes() == lock_before
    assert "[fastapi-deploy secret-check] no secrets" in output, show(updated)
    assert "next: In each file keep what both sides need" in output
    assert "run.py after-update" in output.split("next:", 1)[1]

    # Run by hand before resolving, a step that reads the file refuses and exits 1.
    early = tasks("lock", project)
    assert early.returncode == 1 and "not run: it reads pyproject.toml" in early.stderr, show(early)

    # Resolved (the project's side of each conflict kept) and added, the printed command finishes.
    for name in unmerged:
        (project / name).write_text(_keep_ours((project / name).read_text()))
    git(project, "add", *unmerged)
    again = tasks("after-update", project)
    assert again.returncode == 0, show(again)
    assert "conflict" not in again.stderr, show(again)
    assert "[fastapi-deploy lock] updated uv.lock" in again.stderr, show(again)
    slug = yaml.safe_load((project / ".copier-answers.yml").read_text())["project_slug"]
    requires = _locked(project, slug)["metadata"]["requires-dist"]
    assert {"name": "fastapi", "specifier": USER_FASTAPI.removeprefix("fastapi")} in requires
    assert "anyio" in {req["name"] for req in requires}  # the release's part of the merge


def _keep_ours(text: str) -> str:
    """Resolve Copier's conflict blocks by keeping the project's side."""
    return re.sub(r"<<<<<<< [^\n]*\n(.*?)=======\n.*?>>>>>>> [^\n]*\n", r"\1", text, flags=re.DOTALL)


@pytest.mark.slow  # runs detect-secrets
def test_after_update_names_markers_and_rejects_and_reads_neither(render: Any) -> None:
    """Markers in .env.example and a pyproject.toml.rej (`--conflict rej`): named, not read."""
    project = render(database="none")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated")  # its docs/update.md shows a block: not a conflict
    example = project / ".env.example"
    text = example.read_text()
    example.write_text(
        text.replace(
            "LOG_LEVEL=INFO\n",
            "<<<<<<< before updating\nLOG_LEVEL=DEBUG\n=======\nLOG_LEVEL=INFO\n>>>>>>> after updating\n",
        )
    )
    line = text.splitlines().index("LOG_LEVEL=INFO") + 1
    (project / "pyproject.toml.rej").write_text("diff a/pyproject.toml b/pyproject.toml\t(rejected hunks)\n")
    (project / ".env").write_text("LOG_LEVEL=INFO\n")
    result = tasks("after-update", project)
    assert result.returncode == 0, show(result)
    assert "the update left conflicts in 2 file(s):" in result.stderr
    assert f".env.example (conflict at line {line})" in result.stderr
    assert "pyproject.toml.rej (hunks of pyproject.toml that did not apply)" in result.stderr
    assert "[fastapi-deploy secrets] not run: it reads .env.example" in result.stderr
    assert "[fastapi-deploy lock] not run: it reads pyproject.toml.rej" in result.stderr
    assert not (project / "uv.lock").exists()
    assert "=======" not in result.stderr.split("next:")[0].split("[fastapi-deploy secrets]")[1]


@pytest.mark.slow
def test_adding_a_platform_later_adds_its_files_and_leaves_the_rest(template_repo: Path, tmp_path: Path) -> None:
    before_answers = {"platforms": ["railway"]}
    after_answers = {"platforms": ["railway", "digitalocean"]}
    expected_old = render_template(template_repo, tmp_path / "old", **before_answers)
    expected_new = render_template(template_repo, tmp_path / "new", **after_answers)
    old_files, new_files = _files(expected_old), _files(expected_new)
    added = set(new_files) - set(old_files)
    assert added, "the new platform must bring files"
    assert not set(old_files) - set(new_files), "adding a platform removes nothing"
    changed = {name for name in old_files if old_files[name] != new_files[name]}

    project = tmp_path / "orders-api"
    copied = copier(
        "copy", "--trust", "--defaults", "--skip-tasks", "--data", "platforms=[railway]", template_repo, project
    )
    assert copied.returncode == 0, show(copied)
    for step in ("secrets", "lock"):  # what the skipped tasks would have made
        assert tasks(step, project).returncode == 0
    git(project, "init", "-q", "-b", "main")
    main = next(project.glob("src/*/main.py"))
    main.write_text(main.read_text() + "\n# user edit\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated, plus a user edit")
    before = _files(project)

    updated = copier(
        "update", "--defaults", "--trust", "--data", f"platforms={json.dumps(after_answers['platforms'])}", cwd=project
    )
    assert updated.returncode == 0, show(updated)
    after = _files(project)
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["platforms"] == after_answers["platforms"]
    assert set(after) - set(before) == added
    for name in added:
        assert after[name] == new_files[name], f"{name} differs from a fresh render with the new platform"
    users = set(yaml.safe_load((template_repo / "copier.yml").read_text())["_skip_if_exists"])
    for name, content in before.items():
        if name == ".copier-answers.yml":
            continue
        if name in changed and name not in users:
            assert after[name] == new_files[name], f"{name} should follow the new answers"
        else:
            assert after[name] == content, f"{name} changed although the platform does not concern it"
    assert not list(project.rglob("*.rej"))


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not {".git", ".venv", "__pycache__"} & set(path.relative_to(root).parts)
    }
