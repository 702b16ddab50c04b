"""The template's own CI, its releases, and the generated project's scheduled template update.

- .github/workflows/ at the template's root: actionlint and `zizmor --offline` report nothing;
  every action is pinned to a commit SHA with its version in a comment, checkouts keep no
  credentials, the workflow grants nothing and each job reads contents only; the jobs run the
  tiers of the Makefile, with the service images derive() gives the generated projects; none of
  it is rendered into a project;
- CHANGELOG.md follows Keep a Changelog with PEP 440 versions, tags are PEP 440 versions, and
  docs/releasing.md (in the site's nav) covers bump, changelog, tag and `_migrations`;
- template-update.yml in a generated GitHub project passes actionlint and zizmor, runs the
  Copier this template is tested with, and (slow) really opens the update pull request: run
  against a local template repository with a newer release, it pushes the update branch and
  calls `gh pr create` with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, ROOT, render_template, run

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py

WORKFLOWS = ROOT / ".github" / "workflows"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[\w./-]+)@(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$", re.MULTILINE)
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def _load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # PyYAML reads the key `on` as True
    return data


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    assert found, f"{name} is in the dev group: run `make setup`"
    return found


def lint_workflows(*paths: Path) -> None:
    """actionlint (with shellcheck on run: scripts) and zizmor's offline audits: nothing found."""
    run([_tool("actionlint"), *map(str, paths)], env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    result = run([_tool("zizmor"), "--offline", "--no-progress", *map(str, paths)], check=False)
    assert result.returncode == 0 and "No findings to report" in result.stdout, result.stdout + result.stderr


def check_pins(path: Path) -> None:
    text = path.read_text()
    pins = list(USES.finditer(text))
    assert pins, f"{path.name} uses no action"
    for pin in pins:
        assert re.fullmatch(r"[0-9a-f]{40}", pin["ref"]), f"{path.name}: {pin['action']}@{pin['ref']} is not a SHA"
        assert pin["comment"] and re.fullmatch(r"v\d+(\.\d+)*", pin["comment"].strip()), (
            f"{path.name}: {pin['action']} needs its version in a comment (`# v1.2.3`)"
        )
    workflow = _load(path)
    assert workflow["permissions"] == {}, f"{path.name}: nothing at the top level; each job asks for its own"
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {name} keeps the token"


def _all_pins(*paths: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for pin in USES.finditer(path.read_text()):
            found.setdefault(pin["action"], set()).add(f"{pin['ref']} {pin['comment'].strip()}")
    return found


# ---------------------------------------------------------------------------------------------
# The template's own CI
# ---------------------------------------------------------------------------------------------
def test_template_workflows_pass_actionlint_and_zizmor() -> None:
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert [w.name for w in workflows] == ["template.yml"]
    lint_workflows(*workflows)


def test_zizmor_is_really_checking(tmp_path: Path) -> None:
    """A checkout that keeps its credentials and a tag-pinned third-party action are findings."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    permissions:\n      contents: read\n"
        "    steps:\n      - uses: actions/checkout@v5\n      - uses: astral-sh/setup-uv@v7\n"
    )
    result = run([_tool("zizmor"), "--offline", "--no-progress", str(bad)], check=False)
    assert result.returncode != 0
    assert "artipacked" in result.stdout and "unpinned-uses" in result.stdout, result.stdout


def test_template_workflow_pins_actions_and_grants_only_read() -> None:
    path = WORKFLOWS / "template.yml"
    check_pins(path)
    for name, job in _load(path)["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        assert job.get("timeout-minutes"), f"{name} has no timeout"


def test_template_workflow_runs_every_tier_against_the_generated_projects_servers() -> None:
    workflow = _load(WORKFLOWS / "template.yml")
    jobs = workflow["jobs"]
    runs = {name: "\n".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert workflow["env"]["FD_REQUIRE_ALL"] == "1", "a skip must fail CI on GitHub as in .ci/run"
    assert "make test-fast" in runs["fast"]
    assert runs["images"].count("make test") == 1 and "-m container" in runs["images"]
    assert any(s.get("uses", "").startswith("docker/setup-buildx-action@") for s in jobs["images"]["steps"])
    assert "tests/test_update.py" in runs["update"] and "tests/test_update_railway.py" in runs["update"]
    assert jobs["app"]["strategy"]["matrix"]["servers"] == ["postgres", "mysql", "redis"]
    postgres = context.derive({"project_slug": "x", "package_name": "x", "database": "postgresql"})
    mysql = context.derive({"project_slug": "x", "package_name": "x", "database": "mysql"})
    for name in ("app", "images"):
        services = jobs[name]["services"]
        assert services["postgres"]["image"] == postgres["db_image"]
        assert services["mariadb"]["image"] == mysql["db_image"]
        assert services["redis"]["image"] == postgres["redis_image"]
        assert services["postgres"]["ports"] == [f"{postgres['db_port']}:{postgres['db_port']}"]
        assert services["mariadb"]["ports"] == [f"{mysql['db_port']}:{mysql['db_port']}"]


def test_root_github_folder_is_never_rendered(render: Callable[..., Path]) -> None:
    assert yaml.safe_load((ROOT / "copier.yml").read_text())["_subdirectory"] == "template"
    project = render(ci="github", platforms=["railway"])
    rendered = sorted(p.name for p in (project / ".github" / "workflows").iterdir())
    assert rendered == ["ci.yml", "deploy-railway.yml", "template-update.yml"]
    assert not (project / "CHANGELOG.md").exists() and not (project / "docs" / "releasing.md").exists()


# ---------------------------------------------------------------------------------------------
# Releases
# ---------------------------------------------------------------------------------------------
def test_changelog_follows_keep_a_changelog_with_pep440_versions() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[(.+?)\](.*)$", text, re.MULTILINE)
    assert headings and headings[0] == ("Unreleased", ""), "the first section is ## [Unreleased]"
    assert re.search(r"^### (Added|Changed|Deprecated|Removed|Fixed|Security)$", text, re.MULTILINE)
    released = []
    for version, rest in headings[1:]:
        assert PEP440.match(version), f"{version} is not a PEP 440 version"
        assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), f"## [{version}] needs ' - YYYY-MM-DD'"
        released.append(version)
    from packaging.version import Version

    assert released == sorted(released, key=Version, reverse=True), "newest release first"
    for version, _ in headings:
        assert re.search(rf"^\[{re.escape(version)}\]: https://\S+$", text, re.MULTILINE), f"no link for [{version}]"
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert PEP440.match(project_version)
    if released:
        assert Version(project_version) >= Version(released[0]), "pyproject.toml is behind the newest release"
    tags = run(["git", "tag", "--list"], cwd=ROOT).stdout.split()
    for tag in tags:
        assert PEP440.match(tag), f"tag {tag} is not a PEP 440 version: copier update would ignore it"
        assert tag in released, f"tag {tag} has no section in CHANGELOG.md"


def test_release_checklist_is_in_the_docs() -> None:
    page = (ROOT / "docs" / "releasing.md").read_text()
    for topic in ("pyproject.toml", "CHANGELOG.md", "git tag -a", "PEP 440", "_migrations", "_stage == 'before'"):
        assert topic in page, topic
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    assert {"Releasing": "releasing.md"} in nav


# ---------------------------------------------------------------------------------------------
# The generated project's scheduled template update
# ---------------------------------------------------------------------------------------------
def _locked(name: str) -> str:
    lock = (ROOT / "uv.lock").read_text()
    return re.search(rf'^name = "{re.escape(name)}"\nversion = "(.+)"$', lock, re.MULTILINE).group(1)


def test_template_update_workflow_is_pinned_clean_and_uses_the_tested_copier(render: Callable[..., Path]) -> None:
    project = render(ci="github", platforms=["railway"])
    path = project / ".github" / "workflows" / "template-update.yml"
    lint_workflows(path)
    check_pins(path)
    workflow = _load(path)
    assert workflow["on"]["schedule"] and "workflow_dispatch" in workflow["on"]
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    locked = tuple(f"{name}=={_locked(name)}" for name in ("copier", "copier-template-extensions", "jinja2-time"))
    assert locked == context.COPIER_REQUIREMENTS, "the workflow runs the Copier this template is tested with (uv.lock)"
    text = path.read_text()
    assert " --with ".join(context.COPIER_REQUIREMENTS) in text
    assert "copier check-update" in text and "gh pr create" in text
    # One version of each action across the template's CI and the generated update workflow.
    pins = _all_pins(WORKFLOWS / "template.yml", path)
    assert all(len(refs) == 1 for refs in pins.values()), pins
    assert not (render(ci="gitlab") / ".github").exists()


FAKE_GH = """#!/bin/sh
# Records what the workflow asks of GitHub's CLI; `gh pr create` also saves the body it was given.
printf '%s\\n' "$*" >> "$FD_GH_LOG"
if [ "$1 $2" = "pr create" ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = "--body-file" ]; then cp "$2" "$FD_GH_LOG.body"; fi
    shift
  done
fi
"""


def _steps(path: Path) -> list[dict[str, Any]]:
    (job,) = _load(path)["jobs"].values()
    return [s for s in job["steps"] if "run" in s]


@pytest.mark.slow
def test_template_update_workflow_opens_the_pull_request(template_src: Path, tmp_path: Path) -> None:
    """The workflow's own run: steps, against a template repository with a newer release."""
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def git(cwd: Path, *args: str) -> str:
        return run(["git", *args], cwd=cwd, env=git_env).stdout

    template = tmp_path / "fastapi-deploy"
    shutil.copytree(template_src, template)
    git(template, "init", "-q", "-b", "main")
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "0.1.0")
    git(template, "tag", "0.1.0")

    project = render_template(template, tmp_path / "service", ci="github", platforms=["railway"], database="sqlite")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "generated")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(project), str(origin))
    git(project, "remote", "add", "origin", str(origin))

    # 0.2.0 adds a line to one page and rewrites the title of another, which the user retitled.
    tasks_page = template / "template" / "docs" / "tasks.md.jinja"
    tasks_page.write_text(tasks_page.read_text() + "\nReleased in 0.2.0.\n")
    container_page = template / "template" / "docs" / "container.md.jinja"
    rest = container_page.read_text().split("\n", 1)[1]
    container_page.write_text("# The image, as of 0.2.0\n" + rest)
    user_page = project / "docs" / "container.md"
    user_page.write_text("# Our image\n" + user_page.read_text().split("\n", 1)[1])
    git(project, "commit", "-q", "-am", "our title")
    git(template, "commit", "-q", "-am", "0.2.0")
    git(template, "tag", "0.2.0")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    outputs = tmp_path / "github_output"
    outputs.touch()
    env = {
        **git_env,
        "PATH": os.pathsep.join([str(bin_dir), str(BIN), os.environ["PATH"]]),
        "GITHUB_OUTPUT": str(outputs),
        "FD_GH_LOG": str(tmp_path / "gh.log"),
        "GH_TOKEN": "not-a-token",
        "BASE": "main",
        "UV_PYTHON_DOWNLOADS": "never",
    }
    check, apply, publish = _steps(project / ".github" / "workflows" / "template-update.yml")[1:]
    assert shutil.which("jq"), "jq is needed to read check-update's JSON (GitHub's runners have it)"
    run(["bash", "-eo", "pipefail", "-c", check["run"]], cwd=project, env=env)
    found = dict(line.split("=", 1) for line in outputs.read_text().split())
    assert found == {"available": "true", "latest": "0.2.0"}
    assert apply["if"] == publish["if"] == "steps.check.outputs.available == 'true'"
    # The template's tasks run (copier update --trust) in a step with no token and no git credentials.
    assert "GH_TOKEN" not in apply.get("env", {}) and "gh " not in apply["run"], apply
    assert "copier update" not in publish["run"], publish
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    no_token = {k: v for k, v in env.items() if k != "GH_TOKEN"} | {"LATEST": "0.2.0", "RUNNER_TEMP": str(runner_temp)}
    run(["bash", "-eo", "pipefail", "-c", apply["run"]], cwd=project, env=no_token, timeout=900)
    branch = dict(line.split("=", 1) for line in outputs.read_text().split())["branch"]
    assert branch == "template-update/0.2.0"
    done = run(["bash", "-eo", "pipefail", "-c", publish["run"]], cwd=project,
               env={**no_token, "GH_TOKEN": "not-a-token", "BRANCH": branch})  # fmt: skip

    branches = git(origin, "branch", "--list", "template-update/*").split()
    assert branches == ["template-update/0.2.0"], done.stdout
    shown = git(origin, "show", "template-update/0.2.0:docs/tasks.md")
    assert "Released in 0.2.0." in shown
    answers = yaml.safe_load(git(origin, "show", "template-update/0.2.0:.copier-answers.yml"))
    assert answers["_commit"] == "0.2.0"
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert calls[0] == "auth setup-git"
    assert calls[-1].startswith("pr create --base main --head template-update/0.2.0 --title ")
    conflicted = git(origin, "show", "template-update/0.2.0:docs/container.md")
    assert "<<<<<<< " in conflicted and "# Our image" in conflicted and "# The image, as of 0.2.0" in conflicted
    body = (tmp_path / "gh.log.body").read_text()
    assert "Resolve the conflicts in these files" in body
    assert re.findall(r"^- `(.+)`$", body, re.MULTILINE) == ["docs/container.md"], body

    # A later run on a fresh runner: the branch is on the remote, so no second pull request.
    git(project, "switch", "-q", "--force", "main")
    git(project, "branch", "-q", "-D", branch)
    run(["bash", "-eo", "pipefail", "-c", apply["run"]], cwd=project, env=no_token, timeout=900)
    again = run(["bash", "-eo", "pipefail", "-c", publish["run"]], cwd=project,
                env={**no_token, "GH_TOKEN": "not-a-token", "BRANCH": branch})  # fmt: skip
    assert "already open" in again.stdout
    assert sum(line.startswith("pr create") for line in (tmp_path / "gh.log").read_text().splitlines()) == 1
    subprocess.run(["git", "switch", "-q", "main"], cwd=project, check=False)
