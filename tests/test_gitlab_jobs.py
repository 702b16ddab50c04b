"""The generated .gitlab-ci.yml's jobs run, line by line, on this machine (tests/gitlab_pipeline.py).

What is real and what is a stand-in (docs/testing.md says the same):
- lint, hadolint, shellcheck and test run their real lines: pip installs the pinned uv into the
  job's Python (a venv of this machine's Python of the project, standing in for the job's
  `python:<version>-slim` image), `uv sync --locked`, ruff, mypy, hadolint and shellcheck from
  PyPI, the generated suite with REQUIRE_SERVICES=1 and `alembic upgrade`/`check`. The job's
  `services:` are this machine's PostgreSQL/MariaDB/Redis: their aliases (`db`, `redis`) resolve
  to 127.0.0.1 in the job's mount namespace, and the database a service's variables name
  (POSTGRES_DB, MARIADB_DATABASE) is created on the real server first, as the image would.
  `cache:` paths are restored from this machine's uv cache, as GitLab restores a job's cache.
- build-image runs every line in a private network namespace. The dind service and registry are
  not here: `docker` is a recorder, except that `docker run` starts the image's CMD (derive()'s
  serve_argv) from the project's own environment with the Dockerfile's ENV and the line's `-e`,
  so scripts/health-check.sh polls a real server at http://docker:<port>. The image itself is
  built for real by tests/test_container.py. `docker push` answers with a digest as a registry
  does; syft, grype and cosign are recorders that `docker cp` copies out of the pinned images
  (cosign refuses a tag, a key or a missing SIGSTORE_ID_TOKEN of audience sigstore).
- The deploy jobs run up to `scripts/deploy.sh <platform> <environment>` (real: it checks its
  arguments); `deploy/<platform>/deploy.sh` is a recorder, so a job stops where the platform
  begins. apk is a stand-in that checks each package's commands are on this machine or recorders
  (doctl, kubectl, aws, railway, ssh); npm records.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PROJECT_ENV, UV, _admin_sql, need, run
from deploy_checks import answers, derived, dockerfile_instructions, tool
from gitlab_pipeline import (
    Result,
    dotenv,
    evaluate,
    jobs,
    load,
    namespaces_work,
    pipeline,
    predefined,
    run_job,
    script_lines,
    variables,
)

pytestmark = [pytest.mark.xdist_group("gitlab-jobs")]

# Every platform GitLab CI can deploy to (copier.yml refuses digitalocean with it: App Platform
# cannot pull from GitLab's registry).
ALL = ["railway", "aws_ecs", "aws_eb", "kubernetes", "vm"]
# Names of their own, so the test databases collide with no other test's.
POSTGRES: dict[str, Any] = {
    "project_slug": "fd-gitlab-pg",
    "platforms": ALL,
    "database": "postgresql",
    "redis": True,
    "ci": "gitlab",
}
MARIADB: dict[str, Any] = {
    "project_slug": "fd-gitlab-maria",
    "platforms": ["railway"],
    "database": "mysql",
    "ci": "gitlab",
}

# CI/CD settings variables (docs/ci.md); File-type ones are paths to a file with this content.
SETTINGS = {
    "RAILWAY_TOKEN": "test-railway-token",
    "DIGITALOCEAN_ACCESS_TOKEN": "test-do-token",
    "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/deploy",
    "VM_HOST": "deploy@vm",
}
FILE_SETTINGS = {
    "KUBE_CONFIG": "apiVersion: v1\nkind: Config\n",
    "VM_SSH_KEY": "test key\n",
    "VM_KNOWN_HOSTS": "vm ssh-ed25519 AAAA\n",
}

# Alpine packages the jobs add, and the commands each gives the job.
APK_PACKAGES = {
    "bash": ["bash"],
    "git": ["git"],
    "curl": ["curl"],
    "jq": ["jq"],
    "zip": ["zip"],
    "nodejs": ["node"],
    "npm": ["npm"],
    "doctl": ["doctl"],
    "aws-cli": ["aws"],
    "kubectl": ["kubectl"],
    "openssh-client": ["ssh", "scp"],
}
RECORD = 'printf "%s %s\\n" "$(basename "$0")" "$*" >>"$STAND_IN_LOG"'
# Platform CLIs: recorders first on PATH, so no job line can reach a real cloud.
RECORDERS = ["doctl", "kubectl", "aws", "railway", "ssh", "scp", "npm"]

APK_CASES = "".join(f"        {name}) provides={shlex.quote(' '.join(c))} ;;\n" for name, c in APK_PACKAGES.items())
APK = f"""#!/usr/bin/env bash
set -euo pipefail
{RECORD}
[[ "${{1:-}}" == add ]] || {{ echo "apk ${{1:-}}: the stand-in knows only add" >&2; exit 1; }}
shift
for package in "$@"; do
    case "$package" in
        --no-cache | --quiet) continue ;;
{APK_CASES}        *) echo "apk add $package: an Alpine package the stand-in does not know" >&2; exit 1 ;;
    esac
    for command in $provides; do
        command -v "$command" >/dev/null ||
            {{ echo "apk: $package's $command is neither here nor a stand-in" >&2; exit 1; }}
    done
done
"""

SYFT = f"""#!/usr/bin/env bash
set -euo pipefail
{RECORD}
[[ "${{1:-}}" == scan && "${{2:-}}" == docker-archive:* ]] ||
    {{ echo "syft: scan docker-archive:<tar> expected" >&2; exit 1; }}
test -s "${{2#docker-archive:}}" || {{ echo "syft: no image archive at ${{2#docker-archive:}}" >&2; exit 1; }}
[[ "${{3:-}}" == -o && "${{4:-}}" == spdx-json=* ]] || {{ echo "syft: -o spdx-json=<file> expected" >&2; exit 1; }}
printf '{{"spdxVersion": "SPDX-2.3", "name": "%s", "packages": []}}\\n' "$2" >"${{4#spdx-json=}}"
"""

GRYPE = f"""#!/usr/bin/env bash
set -euo pipefail
{RECORD}
[[ "${{1:-}}" == sbom:* ]] || {{ echo "grype: sbom:<file> expected" >&2; exit 1; }}
jq -e '.spdxVersion' "${{1#sbom:}}" >/dev/null || {{ echo "grype: ${{1#sbom:}} is no SPDX SBOM" >&2; exit 1; }}
"""

COSIGN = f"""#!/usr/bin/env bash
set -euo pipefail
{RECORD}
[[ "${{SIGSTORE_ID_TOKEN:-}}" == *aud=sigstore ]] ||
    {{ echo "cosign: no SIGSTORE_ID_TOKEN of audience sigstore" >&2; exit 1; }}
case " $* " in *" --key"*) echo "cosign: keyless only, no --key" >&2; exit 1 ;; esac
[[ " $* " == *" --yes "* ]] || {{ echo "cosign: would prompt (no --yes)" >&2; exit 1; }}
ref="${{!#}}"
[[ "$ref" =~ @sha256:[0-9a-f]{{64}}$ ]] || {{ echo "cosign: $ref is not an image digest" >&2; exit 1; }}
case "$1" in
    sign) ;;
    attest)
        predicate=""
        while [[ $# -gt 0 ]]; do [[ "$1" == --predicate ]] && predicate="$2"; shift; done
        test -s "$predicate" || {{ echo "cosign attest: no predicate file" >&2; exit 1; }}
        ;;
    *) echo "cosign $1: not implemented by the stand-in" >&2; exit 1 ;;
esac
"""

DOCKER = '''#!{python}
"""Stand-in for a GitLab job's docker CLI: the dind service and the registry are not here."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write("docker " + " ".join(args) + "\\n")
state = Path(os.environ["STAND_IN_STATE"])
names = json.loads(state.read_text()) if state.exists() else {{}}
command = args[0] if args else ""


def option(flag):
    return args[args.index(flag) + 1]


def fail(message):
    sys.exit(f"docker {{command}} (stand-in): {{message}}")


if command == "login":
    if "--password-stdin" not in args or not sys.stdin.read().strip():
        fail("no password on standard input")
    print("Login Succeeded")
elif command == "build":
    if not Path("Dockerfile").is_file() or "-t" not in args:
        fail("no Dockerfile or no -t")
elif command == "push":
    ref = args[1]
    repository, tag = ref.rsplit(":", 1)
    print(f"The push refers to repository [{{repository}}]")
    print(f"{{tag}}: digest: sha256:{{hashlib.sha256(ref.encode()).hexdigest()}} size: 1789")
elif command == "create":
    names[option("--name")] = args[-1]
    state.write_text(json.dumps(names))
elif command == "cp":
    name, path = args[1].split(":", 1)
    pinned = json.loads(os.environ["STAND_IN_IMAGES"])
    tool = Path(path).name
    if name not in names:
        fail(f"no container {{name}} (docker create first)")
    if [names[name], path] != pinned.get(tool):
        fail(f"{{names[name]}}:{{path}} is not the pinned {{pinned.get(tool)}}")
    shutil.copy(Path(os.environ["STAND_IN_STORE"]) / tool, args[2])
elif command == "save":
    Path(option("-o")).write_text(f"stand-in archive of {{args[-1]}}\\n")
elif command == "run":
    # What the container sees: the image's ENV and the line's -e, not the job's variables.
    env = {{"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **json.loads(os.environ["SMOKE_ENV"])}}
    env.update(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-e")
    server = Path(os.environ["SMOKE_LOG"]).open("w")
    argv = json.loads(os.environ["SMOKE_ARGV"])
    subprocess.Popen(argv, cwd=os.environ["SMOKE_CWD"], env=env, stdout=server, stderr=server)
    print("stand-in-container")
elif command == "logs":
    print(Path(os.environ["SMOKE_LOG"]).read_text())
elif command in ("pull", "tag"):
    pass
else:
    fail("not implemented")
'''

DEPLOY_RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$(basename "$(dirname "$0")") $* IMAGE_REF=${IMAGE_REF:-}" >>"$DEPLOY_LOG"
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def stand_ins(folder: Path) -> tuple[Path, Path]:
    """(on PATH, the store `docker cp` copies syft, grype and cosign from)."""
    bin_dir, store = folder / "bin", folder / "store"
    write(bin_dir / "apk", APK)
    write(bin_dir / "docker", DOCKER.format(python=sys.executable))
    for name in RECORDERS:
        write(bin_dir / name, f"#!/usr/bin/env bash\n{RECORD}\n")
    write(store / "syft", SYFT)
    write(store / "grype", GRYPE)
    write(store / "cosign", COSIGN)
    return bin_dir, store


def pinned_tools(values: dict[str, Any]) -> dict[str, list[str]]:
    """{tool: [image, path of the binary in it]}: what derive() pins for the build job."""
    return {name: [image, path] for name, (image, path) in values["supply_chain_tools"].items()}


def image_env(project: Path) -> dict[str, str]:
    """The Dockerfile's ENV (PATH aside): what `docker run` would start the CMD with."""
    found: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions(project / "Dockerfile"):
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                if key != "PATH":
                    found[key] = value
    return found


class Runner:
    """Runs the jobs of one rendered project's pipeline, with its stand-ins and their logs."""

    def __init__(self, source: Path, work: Path) -> None:
        self.work = work
        self.project = work / "project"
        shutil.copytree(source, self.project, ignore=shutil.ignore_patterns(".venv", ".uv-cache"))
        self.values = derived(source)
        self.config = load(self.project / ".gitlab-ci.yml")
        self.bin, self.store = stand_ins(work / "stand-ins")
        self.log = work / "stand-ins.log"
        self.deploy_log = work / "deploy.log"
        self.missing = work / "missing-commands.log"
        for path in (self.log, self.deploy_log, self.missing):
            path.touch()
        for platform in answers(source)["platforms"]:
            write(self.project / "deploy" / self.values["platform_dirs"][platform] / "deploy.sh", DEPLOY_RECORDER)
        self.python = work / "image-python"  # the job image's Python, with its pip
        version = self.values["python"]["version"]
        run([UV, "venv", "--quiet", "--seed", "--python", version, str(self.python)], timeout=300)
        self.synced = source / ".venv/bin/python"  # the project's own environment (docker run)
        self.reports: dict[str, str] = {}

    def env(self, name: str, kind: str = "default") -> dict[str, str]:
        job = jobs(self.config)[name]
        builds = self.work / "builds"
        home = self.work / "home" / name
        for folder in (builds, home):
            folder.mkdir(parents=True, exist_ok=True)
        python_image = job.get("image", "").startswith("python:")
        path = [str(self.bin), *([str(self.python / "bin")] if python_image else []), os.environ["PATH"]]
        base = {k: v for k, v in PROJECT_ENV.items() if not k.startswith(("UV_", "CI_", "VIRTUAL_ENV"))}
        base |= {
            "PATH": os.pathsep.join(path),
            "HOME": str(home),
            "UV_PYTHON_DOWNLOADS": "never",
            "STAND_IN_LOG": str(self.log),
            "STAND_IN_STATE": str(self.work / "docker-state.json"),
            "STAND_IN_STORE": str(self.store),
            "STAND_IN_IMAGES": json.dumps(pinned_tools(self.values)),
            "DEPLOY_LOG": str(self.deploy_log),
            "MISSING_LOG": str(self.missing),
            "SMOKE_ARGV": json.dumps([str(self.synced), *self.values["serve_argv"][1:]]),
            "SMOKE_ENV": json.dumps(image_env(self.project)),
            "SMOKE_CWD": str(self.project),
            "SMOKE_LOG": str(self.work / f"{name}-server.log"),
        }
        env = predefined(kind, self.project, builds) | base | SETTINGS
        for key, content in FILE_SETTINGS.items():
            (self.work / key).write_text(content)
            env[key] = str(self.work / key)
        env |= self.reports  # dotenv reports of the jobs of earlier stages
        for token, spec in job.get("id_tokens", {}).items():
            env[token] = f"test-oidc-token-of-{name}-aud={spec['aud']}"  # never a real token
        return variables(self.config, job, env)

    def restore_cache(self, job: dict[str, Any]) -> None:
        """The job's `cache:` paths, restored (here: this machine's uv cache, as a link)."""
        cache_dir = run([UV, "cache", "dir"]).stdout.strip()
        for path in job.get("cache", {}).get("paths", []):
            target = self.project / path
            if not target.exists():
                target.symlink_to(cache_dir)

    def job(self, name: str, kind: str = "default", network: bool = True) -> Result:
        job = jobs(self.config)[name]
        self.restore_cache(job)
        result = run_job(name, job, self.env(name, kind), self.project, self.work / "jobs", network=network)
        report = job.get("artifacts", {}).get("reports", {}).get("dotenv")
        if result.passed and report and (self.project / report).exists():
            self.reports |= dotenv(self.project / report)
        missing = self.missing.read_text()
        assert not missing, f"{name}: commands neither on this machine nor stood in: {missing}"
        return result

    def recorded(self, prefix: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith(prefix)]


def passed(result: Result) -> None:
    assert result.passed, f"job {result.name} failed (exit {result.returncode}):\n{result.output[-8000:]}"


@pytest.fixture(scope="module")
def namespaces() -> None:
    problem = namespaces_work()
    need(problem is None, f"the GitLab job runner needs mount and network namespaces: {problem}")


@pytest.fixture(scope="module")
def runner(
    namespaces: None, project: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[dict[str, Any]], Runner]:
    made: dict[str, Runner] = {}

    def _runner(answers: dict[str, Any]) -> Runner:
        key = answers["project_slug"]
        if key not in made:
            made[key] = Runner(project(**answers), tmp_path_factory.mktemp(f"gitlab-{key}"))
        return made[key]

    return _runner


@pytest.fixture
def service_databases(request: pytest.FixtureRequest) -> Iterator[Callable[[Runner], None]]:
    """Creates the database each `services:` entry's variables name, as its image would, on
    this machine's server; dropped afterwards."""
    created: list[tuple[str, str, str]] = []

    def _create(runner: Runner) -> None:
        for service in jobs(runner.config)["test"].get("services", []):
            for key, kind, fixture in (
                ("POSTGRES_DB", "postgresql", "postgres_url"),
                ("MARIADB_DATABASE", "mysql", "mysql_url"),
            ):
                name = service.get("variables", {}).get(key)
                if name:
                    admin = request.getfixturevalue(fixture)
                    _admin_sql(kind, admin, f"DROP DATABASE IF EXISTS {name}")
                    _admin_sql(kind, admin, f"CREATE DATABASE {name}")
                    created.append((kind, admin, name))
            if service.get("alias") == "redis":
                request.getfixturevalue("redis_url")

    yield _create
    for kind, admin, name in created:
        _admin_sql(kind, admin, f"DROP DATABASE IF EXISTS {name}")


# ---- lint and test jobs, for real ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(POSTGRES, id="postgresql", marks=[pytest.mark.postgres, pytest.mark.redis]),
        pytest.param(MARIADB, id="mariadb", marks=[pytest.mark.mysql]),
    ],
)
def test_lint_and_test_jobs_pass_against_the_real_servers(
    runner: Callable[[dict[str, Any]], Runner], service_databases: Callable[[Runner], None], answers: dict[str, Any]
) -> None:
    pipeline_runner = runner(answers)
    service_databases(pipeline_runner)
    test_job = jobs(pipeline_runner.config)["test"]
    assert {s["alias"] for s in test_job["services"]} >= {"db"}, "the test job's database is a service"
    for name in ("lint", "hadolint", "shellcheck", "test"):
        result = pipeline_runner.job(name)
        passed(result)
    summary = re.search(r"^=+ (\d+ passed.*?) =+$", result.output, re.M)
    assert summary and " failed" not in summary[1], result.output[-4000:]
    print(f"test job ({answers['database']}): the generated suite: {summary[1]}")
    assert "$ uv run alembic check" in result.output.replace('DATABASE_URL="$TEST_DATABASE_URL" ', "")
    assert "No new upgrade operations detected" in result.output, result.output[-3000:]
    db_url = variables(pipeline_runner.config, test_job, {})["TEST_DATABASE_URL"]
    assert "@db:" in db_url, "the job reaches its service by its alias"


# ---- build and deploy jobs, up to the registry and the platform ----------------------------


@pytest.mark.slow
def test_build_job_scans_signs_and_hands_the_digest_to_every_deploy_job(
    runner: Callable[[dict[str, Any]], Runner],
) -> None:
    pipeline_runner = runner(POSTGRES)
    values = pipeline_runner.values
    build = pipeline_runner.job("build-image", network=False)
    passed(build)
    image = "registry.gitlab.example/acme/my-service"
    ref = pipeline_runner.reports["IMAGE_REF"]
    assert re.fullmatch(re.escape(image) + r"@sha256:[0-9a-f]{64}", ref), ref
    assert dotenv(pipeline_runner.project / "image.env") == {"IMAGE_REF": ref}, "only the digest is handed on"
    print(f"build-image: stops at the registry and Sigstore (stand-ins): {pipeline_runner.recorded('docker push')}")
    # The smoke check polled the server started from the image's CMD (the job passed its line).
    assert "$ scripts/health-check.sh" in build.output and (pipeline_runner.work / "build-image-server.log").exists()
    # Scanned, then signed and the SBOM attested, keylessly, by digest, after the push.
    order = [line.split()[0:2] for line in pipeline_runner.log.read_text().splitlines()]
    flat = [" ".join(words) for words in order]
    assert flat.index("syft scan") < flat.index("grype sbom:sbom.spdx.json") < flat.index("docker push")
    assert pipeline_runner.recorded("cosign sign") == [f"cosign sign --yes {ref}"]
    assert pipeline_runner.recorded("cosign attest") == [
        f"cosign attest --yes --type spdxjson --predicate sbom.spdx.json {ref}",
        f"cosign attest --yes --type slsaprovenance1 --predicate provenance.json {ref}",
    ]
    assert "sbom.spdx.json" in jobs(pipeline_runner.config)["build-image"]["artifacts"]["paths"]
    # The build provenance (SLSA v1 predicate): which repository, commit, pipeline file and job built it.
    provenance = json.loads((pipeline_runner.project / "provenance.json").read_text())
    env = pipeline_runner.env("build-image")
    definition, run_details = provenance["buildDefinition"], provenance["runDetails"]
    assert definition["externalParameters"] == {
        "repository": env["CI_PROJECT_URL"], "ref": env["CI_COMMIT_REF_NAME"], "config": ".gitlab-ci.yml"
    }  # fmt: skip
    (source,) = definition["resolvedDependencies"]
    assert source["digest"] == {"gitCommit": env["CI_COMMIT_SHA"]}
    assert run_details["metadata"]["invocationId"] == env["CI_JOB_URL"]
    assert run_details["builder"]["id"].startswith(env["CI_SERVER_URL"])

    created = pipeline(pipeline_runner.config, pipeline_runner.env("build-image"))
    for platform in ALL:
        folder = values["platform_dirs"][platform]
        for environment in ("staging", "production"):
            name = f"deploy-{folder}-{environment}"
            assert created[name] == ("manual" if environment == "production" else "on_success")
            before = len(pipeline_runner.deploy_log.read_text().splitlines())
            result = pipeline_runner.job(name, network=False)
            passed(result)
            assert result.lines[-1] == f'scripts/deploy.sh {platform} "$DEPLOY_ENV"', "deploy.sh is the job's last line"
            (line,) = pipeline_runner.deploy_log.read_text().splitlines()[before:]
            assert line == f"{folder} {environment} IMAGE_REF={ref}", line
            print(f"{name}: stops at deploy/{folder}/deploy.sh {environment} (the platform: a recorder)")
    if "railway" in ALL:
        npm = pipeline_runner.recorded("npm ")
        assert npm and all(f"@railway/cli@{values['railway_cli_version']}" in n for n in npm), npm


@pytest.mark.slow
def test_a_wrong_script_argument_makes_the_deploy_job_fail(
    runner: Callable[[dict[str, Any]], Runner], tmp_path: Path
) -> None:
    """check-jsonschema accepts an extra word in the script line; scripts/deploy.sh refuses it."""
    pipeline_runner = runner(MARIADB)
    path = pipeline_runner.project / ".gitlab-ci.yml"
    source = path.read_text()
    line = 'scripts/deploy.sh railway "$DEPLOY_ENV"'
    assert line in source
    try:
        path.write_text(source.replace(line, f"{line} now"))
        run([tool("check-jsonschema") or "check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(path)])
        pipeline_runner.config = load(path)
        pipeline_runner.reports["IMAGE_REF"] = "registry.gitlab.example/acme/my-service@sha256:" + "ab" * 32
        before = pipeline_runner.deploy_log.read_text()
        result = pipeline_runner.job("deploy-railway-staging", network=False)
        assert result.returncode == 2, f"scripts/deploy.sh's usage error (exit 2):\n{result.output[-3000:]}"
        assert "Usage: " in result.output
        assert pipeline_runner.deploy_log.read_text() == before, "the platform script never ran"
    finally:
        path.write_text(source)
        pipeline_runner.config = load(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mutation", "refusal"),
    [
        ("no id_tokens", "no SIGSTORE_ID_TOKEN of audience sigstore"),
        ("sign the tag", "is not an image digest"),
        ("no digest in the push report", ""),
    ],
)
def test_the_build_job_fails_without_keyless_signing_by_digest(
    runner: Callable[[dict[str, Any]], Runner], mutation: str, refusal: str
) -> None:
    """Each mutation of the build job, all accepted by the gitlab-ci schema, fails its run."""
    pipeline_runner = runner(MARIADB)
    job = jobs(pipeline_runner.config)["build-image"]
    original = json.loads(json.dumps(job))
    try:
        if mutation == "no id_tokens":
            del job["id_tokens"]
        elif mutation == "sign the tag":
            job["script"] = [
                line.replace('sign --yes "$IMAGE_REF"', 'sign --yes "$IMAGE:$TAG"') for line in job["script"]
            ]
        else:
            job["script"] = [line.replace("digest:[[:space:]]", "digest=[[:space:]]") for line in job["script"]]
        assert job != original, mutation
        result = pipeline_runner.job("build-image", network=False)
        assert not result.passed and refusal in result.output, result.output[-3000:]
        last = [line for line in result.output.splitlines() if line.startswith("$ ")][-1]
        failing = "cosign sign" if refusal else "push.log ]; then DIGEST="
        assert failing in last, f"the job stopped at {last!r}"
        assert not pipeline_runner.recorded("cosign attest"), "no SBOM attested after a refused signature"
    finally:
        jobs(pipeline_runner.config)["build-image"].clear()
        jobs(pipeline_runner.config)["build-image"].update(original)
        pipeline_runner.log.write_text("")


# ---- what every job calls, and which pipelines deploy ----------------------------------------

BUILTINS = set(
    subprocess.run(["bash", "-c", "compgen -b; compgen -k"], capture_output=True, text=True, check=True).stdout.split()
)
SEPARATORS = {";", "&&", "||", "|", "(", "{", "then", "do", "else", "elif", "if", "!", "while", "until", "&"}


def substitutions(line: str) -> list[str]:
    """The command lines inside $( ... ) of a line, quotes respected."""
    found, index = [], 0
    while (start := line.find("$(", index)) != -1:
        depth, position, quote = 1, start + 2, ""
        while depth and position < len(line):
            char = line[position]
            if quote:
                quote = "" if char == quote else quote
            elif char == "'":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            position += 1
        found.append(line[start + 2 : position - 1])
        index = position
    return found


def commands(line: str) -> list[str]:
    """The command words of a shell line: each simple command's first word, assignments and
    redirections skipped, $( ... ) included."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    words, expect, skip_next, in_for = [], True, False, False
    for token in lexer:
        if skip_next:
            skip_next = False
            continue
        if token not in SEPARATORS and re.fullmatch(r"[<>&]+", token):
            skip_next = True  # a redirection's target
            continue
        if in_for:
            in_for = token != "do"
            expect = token == "do"
            continue
        if token in SEPARATORS or token in ("}", ")", "fi", "done", "esac"):
            expect = token in SEPARATORS
            continue
        if expect:
            if token == "for":
                in_for = True
                continue
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", token):
                continue
            words.append(token)
            expect = token in ("exec", "command", "time")
    for inner in substitutions(line):
        words += commands(inner)
    return words


@pytest.mark.parametrize("answers", [POSTGRES, MARIADB], ids=["postgresql", "mariadb"])
def test_every_command_the_jobs_call_is_here_or_stood_in(
    template_src: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    from conftest import render_template

    project = render_template(template_src, tmp_path / "p", **answers)
    config = load(project / ".gitlab-ci.yml")
    bin_dir, store = stand_ins(tmp_path / "stand-ins")
    seen: dict[str, str] = {}
    for name, job in jobs(config).items():
        provided: set[str] = set()  # by apk add and docker cp, from that line on
        for line in script_lines(job):
            for word in commands(line):
                assert not word.startswith("$"), f"{name}: a command from a variable cannot be checked: {line}"
                if word in BUILTINS:
                    where = "bash"
                elif "/" in word:
                    assert (project / word).is_file(), f"{name}: {word} is not in the project"
                    where = "the project"
                elif word in provided or (bin_dir / word).exists():
                    where = "stand-in" if (bin_dir / word).exists() or (store / word).exists() else "apk"
                    assert where != "apk" or shutil.which(word), f"{name}: {word} (from apk) is not on this machine"
                elif word == "pip" or word.startswith("uv"):
                    where = "the job image's Python (pip installs uv)"
                else:
                    assert shutil.which(word), f"{name}: {word} is neither on this machine nor stood in ({line})"
                    where = "this machine"
                seen[word] = where
            for added in re.findall(r"apk add ([^;&|]*)", line):
                packages = [p for p in added.split() if not p.startswith("-")]
                unknown = [p for p in packages if p not in APK_PACKAGES]
                assert not unknown, f"{name}: Alpine packages the apk stand-in does not know: {unknown}"
                provided |= {c for p in packages for c in APK_PACKAGES[p]}
            for dest in re.findall(r"docker cp \S+ /usr/local/bin/(\S+)", line):
                assert (store / dest).exists(), f"{name}: no stand-in for {dest}"
                provided.add(dest)
    for needed in ("docker", "apk", "scripts/deploy.sh", "uv", "pip"):
        assert needed in seen, f"{needed} is called by no job: {sorted(seen)}"
    if answers["platforms"] == ALL:
        assert {"cosign", "syft", "grype"} <= set(seen), sorted(seen)


def test_commands_finds_every_command_word() -> None:
    """The extractor the coverage test trusts, on the shapes the file has."""
    assert commands('if [ -f push.log ]; then echo "X=$(sed -n \'s/\\(a\\)/\\1/p\' push.log | tail -n 1)" > f; fi') == [
        "[", "echo", "sed", "tail"
    ]  # fmt: skip
    assert commands('scripts/h.sh -t 60 "http://x" || { docker logs smoke; exit 1; }') == [
        "scripts/h.sh",
        "docker",
        "exit",
    ]
    assert commands('DATABASE_URL="$X" uv run alembic check') == ["uv"]
    assert commands("install -d ~/.ssh && cp a b && chmod 600 b") == ["install", "cp", "chmod"]


def test_production_deploys_only_from_the_default_branch_and_by_hand(template_src: Path, tmp_path: Path) -> None:
    """rules: and workflow: rules evaluated for a fork's MR, a branch, a branch with an MR, and
    the default branch."""
    from conftest import render_template

    project = render_template(template_src, tmp_path / "p", **POSTGRES)
    config = load(project / ".gitlab-ci.yml")
    values = derived(project)
    deploys = {n for n in jobs(config) if n.startswith("deploy-")}
    assert len(deploys) == 2 * len(ALL)

    def created(kind: str) -> dict[str, str]:
        return pipeline(config, predefined(kind, project, tmp_path))

    fork, branch, default = created("fork-mr"), created("branch"), created("default")
    assert created("branch-with-mr") == {}, "a branch with an open MR runs as the MR pipeline only"
    for name, found in (("fork MR", fork), ("branch", branch)):
        assert found and not deploys & set(found), f"a {name} pipeline deploys: {sorted(deploys & set(found))}"
        assert {"lint", "test", "build-image"} <= set(found), name
    for platform in ALL:
        folder = values["platform_dirs"][platform]
        assert default[f"deploy-{folder}-staging"] == "on_success"
        assert default[f"deploy-{folder}-production"] == "manual", "production waits for a person"
        job = jobs(config)[f"deploy-{folder}-production"]
        environment = variables(config, job, predefined("default", project, tmp_path))
        assert job["environment"]["name"] == "$DEPLOY_ENV" and environment["DEPLOY_ENV"] == "production"
    docs = (project / "docs/ci.md").read_text()
    assert re.search(r"protect\s+\*\*production\*\*", docs), "docs/ci.md says to protect production"
    # A fork MR's build job never pushes or signs: both are guarded by the default branch.
    build = " ".join(script_lines(jobs(config)["build-image"]))
    assert build.count('[ "$CI_COMMIT_BRANCH" = "$CI_DEFAULT_BRANCH" ]') == 1


def test_rules_expressions_the_runner_does_not_implement_fail_loudly() -> None:
    env = {"CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"}
    assert evaluate("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", env)
    assert not evaluate('$CI_COMMIT_TAG || $CI_PIPELINE_SOURCE == "merge_request_event"', env)
    assert evaluate('($CI_COMMIT_TAG || $CI_COMMIT_BRANCH) && $CI_COMMIT_BRANCH != "x"', env)
    assert not evaluate("$CI_MERGE_REQUEST_IID == $CI_COMMIT_BRANCH", env), "unset equals only unset"
    for unsupported in ("$CI_COMMIT_BRANCH =~ /^release/", '$CI_COMMIT_BRANCH !~ "x"', "$A == ", "main"):
        with pytest.raises((ValueError, AssertionError)):
            evaluate(unsupported, env)


def test_the_runner_refuses_keys_it_does_not_implement(tmp_path: Path) -> None:
    path = tmp_path / ".gitlab-ci.yml"
    for text in ("a:\n  script: [x]\n  needs: [b]\n", "a:\n  script: [x]\n  rules:\n    - changes: [x]\n"):
        path.write_text(text)
        with pytest.raises(AssertionError, match="not implement"):
            config = load(path)
            pipeline(config, {})


# ---- the build job's supply chain, statically ------------------------------------------------


@pytest.mark.parametrize("answers", [POSTGRES, MARIADB], ids=["postgresql", "mariadb"])
def test_build_job_signs_keylessly_with_an_sbom_and_hands_on_only_the_digest(
    template_src: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    from conftest import render_template

    project = render_template(template_src, tmp_path / "p", **answers)
    values = derived(project)
    raw = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    build = load(project / ".gitlab-ci.yml")["build-image"]
    assert raw["build-image"]["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}, "GitLab's OIDC for Sigstore"
    lines = script_lines(build)
    text = "\n".join(lines)
    # The tools come out of the images derive() pins, never a moving tag.
    for name, (image, path) in values["supply_chain_tools"].items():
        assert re.search(r":v\d+\.\d+\.\d+$", image), image
        create = lines.index(f"docker create --name {name} {image}")
        assert lines[create + 1] == f"docker cp {name}:{path} /usr/local/bin/{name}"
    assert "syft scan docker-archive:image.tar -o spdx-json=sbom.spdx.json" in text
    assert "grype sbom:sbom.spdx.json --fail-on high --only-fixed" in text
    assert 'cosign sign --yes "$IMAGE_REF"' in text
    assert 'cosign attest --yes --type spdxjson --predicate sbom.spdx.json "$IMAGE_REF"' in text
    assert "--key" not in text and "COSIGN_PRIVATE_KEY" not in text, "keyless only"
    # The scan runs before the push; signing after it, on the digest the push reported.
    index = {
        key: next(i for i, line in enumerate(lines) if key in line) for key in ("grype ", "docker push", "cosign sign")
    }
    assert index["grype "] < index["docker push"] < index["cosign sign"]
    assert build["artifacts"]["reports"]["dotenv"] == "image.env"
    assert "sbom.spdx.json" in build["artifacts"]["paths"]
