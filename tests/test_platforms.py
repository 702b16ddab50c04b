"""Railway, DigitalOcean App Platform and AWS ECS Fargate: the rendered files pass the validator
each platform is judged by, and say what derive() says.

- Railway's .railway/railway.ts is type-checked and evaluated with the SDK in test_railway.py;
- .do/app.yaml and .do/deploy.template.yaml (under `spec:`) against the strict App Platform
  schema (Draft 2020-12);
- the ECS task definitions, as deploy/aws/deploy.sh fills them in, against botocore's
  RegisterTaskDefinition input shape (ParamValidator, plus a walk for enum values, which the
  validator skips); the CloudFormation template with cfn-lint; the deploy scripts with shellcheck;
- then each file is read back (port, health paths, timeouts, migration command, replicas, sizes)
  and compared with derive() for the same answers.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import ROOT, render_template, run

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py, the single source of derived values

# One xdist worker renders the answer sets once and runs every test of this module on them.
pytestmark = pytest.mark.xdist_group("platforms")

BIN = Path(sys.executable).parent
SCHEMAS = ROOT / "tests" / "schemas"  # derived from DigitalOcean's OpenAPI description (README there)
MINE = ("railway", "digitalocean", "aws_ecs")

# Answer sets: every database each platform allows, both servers, and the extras that change the
# files (worker, redis, sentry, domain, CORS). SQLite is allowed on Railway only among these.
ROWS: list[dict[str, Any]] = [
    {"database": "postgresql", "server": "uvicorn", "platforms": list(MINE), "domain": "api.example.com"},
    {
        "database": "postgresql",
        "server": "gunicorn",
        "platforms": list(MINE),
        "redis": True,
        "worker": "celery",
        "sentry": True,
    },
    {"database": "mysql", "server": "uvicorn", "platforms": list(MINE), "redis": True, "worker": "arq"},
    {
        "database": "mysql",
        "server": "gunicorn",
        "platforms": list(MINE),
        "cors_origins": "https://app.example.com",
        # A 40-character slug (App Platform names stop at 32) and regions other than the defaults.
        "project_slug": "orders-api-for-the-warehouse-team-europe",
        "aws_region": "eu-west-2",
        "do_region": "fra",
    },
    {"database": "none", "server": "uvicorn", "platforms": list(MINE)},
    {"database": "none", "server": "gunicorn", "platforms": list(MINE), "redis": True, "worker": "arq"},
    {"database": "sqlite", "server": "uvicorn", "platforms": ["railway"]},
    {"database": "sqlite", "server": "gunicorn", "platforms": ["railway", "vm"], "domain": "api.example.com"},
]
IDS = [
    f"{r['database']}-{r['server']}-{'+'.join(r['platforms'])}{'-' + r['worker'] if r.get('worker') else ''}"
    for r in ROWS
]
ENVIRONMENTS = ("staging", "production")
FAKE_ARNS = {
    "IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service:0123456789ab",
    "EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/my-service-staging-ExecutionRole-ABC",
    "TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/my-service-staging-TaskRole-DEF",
}


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is not installed: uv sync installs it into .venv/bin"
    return found


@pytest.fixture(scope="module")
def projects(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every answer set of ROWS rendered once for this module (tasks skipped)."""
    base = tmp_path_factory.mktemp("platforms")
    return {name: render_template(template_src, base / name, **row) for name, row in zip(IDS, ROWS, strict=True)}


def _derived(row: dict[str, Any]) -> dict[str, Any]:
    slug = row.get("project_slug", "my-service")
    answers = {"project_slug": slug, "package_name": slug.replace("-", "_"), **row}
    return context.derive(answers)


def _uses(row: dict[str, Any], platform: str) -> bool:
    return platform in row["platforms"]


# ---------------------------------------------------------------------------------------------
# DigitalOcean App Platform
# ---------------------------------------------------------------------------------------------
DO_SCHEMA = json.loads((SCHEMAS / "do-app-spec.strict.schema.json").read_text())


def _do_errors(spec: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(DO_SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(spec)]


def _do_specs(project: Path) -> dict[str, dict[str, Any]]:
    template = yaml.safe_load((project / ".do/deploy.template.yaml").read_text())
    assert list(template) == ["spec"], "a deploy template holds the spec under `spec:` only"
    return {"production": yaml.safe_load((project / ".do/app.yaml").read_text()), "staging": template["spec"]}


DO_ROWS = [(r, i) for r, i in zip(ROWS, IDS, strict=True) if _uses(r, "digitalocean")]


@pytest.mark.parametrize("row", [r for r, _ in DO_ROWS], ids=[i for _, i in DO_ROWS])
def test_app_platform_specs_are_valid_and_say_what_derive_says(row: dict[str, Any], projects: dict[str, Path]) -> None:
    project = projects[IDS[ROWS.index(row)]]
    d = _derived(row)
    for env, spec in _do_specs(project).items():
        assert _do_errors(spec) == [], env
        size = d["environments"][env]
        assert spec["name"] == d["do_app_names"][env] and len(spec["name"]) <= 32
        assert spec["region"] == row.get("do_region", "nyc")
        assert {a["rule"] for a in spec["alerts"]} >= {
            "DEPLOYMENT_FAILED",
            "DOMAIN_FAILED",
            "CPU_UTILIZATION",
            "MEM_UTILIZATION",
        }
        if size["domain"]:
            assert spec["domains"] == [{"domain": size["domain"], "type": "PRIMARY"}]
        else:
            assert "domains" not in spec
        (web,) = spec["services"]
        assert spec["ingress"]["rules"] == [{"match": {"path": {"prefix": "/"}}, "component": {"name": web["name"]}}]
        assert web["dockerfile_path"] == "Dockerfile" and web["github"]["deploy_on_push"] is True
        assert web["http_port"] == d["app_port"]
        assert web["health_check"]["http_path"] == d["health_ready_path"]
        assert web["health_check"]["port"] == d["app_port"]
        assert web["liveness_health_check"]["http_path"] == d["health_live_path"]
        assert web["termination"] == {"drain_seconds": d["drain_seconds"], "grace_period_seconds": d["kill_timeout"]}
        assert web["instance_size_slug"] == size["do_instance_size"]
        if "autoscaling" in web:
            assert "instance_count" not in web, "App Platform refuses instance_count with autoscaling"
            assert size["do_instance_size"].startswith("apps-d-"), "autoscaling needs a dedicated size"
            assert web["autoscaling"] == {
                "min_instance_count": size["min_replicas"],
                "max_instance_count": size["max_replicas"],
                "metrics": {"cpu": {"percent": d["autoscale_cpu_percent"]}},
            }
        else:
            assert web["instance_count"] == size["replicas"]
        envs = {e["key"]: e for e in web["envs"]}
        assert envs["ENVIRONMENT"]["value"] == env
        assert envs["GRACEFUL_TIMEOUT"]["value"] == str(d["graceful_timeout"])
        for name in d["secret_env_names"]:
            if name == "DATABASE_URL":  # bound to the database component, not a secret to set
                assert envs[name]["value"] == "${db.DATABASE_URL}"
            else:
                assert envs[name]["type"] == "SECRET" and "value" not in envs[name], name
        assert "WEB_CONCURRENCY" in envs if row["server"] == "gunicorn" else "WEB_CONCURRENCY" not in envs
        if d["has_db"]:
            (job,) = spec["jobs"]
            assert job["kind"] == "PRE_DEPLOY" and job["run_command"] == d["migration_command"]
            (db,) = spec["databases"]
            assert db["engine"] == {"postgresql": "PG", "mysql": "MYSQL"}[row["database"]]
        else:
            assert "jobs" not in spec and "databases" not in spec
        if d["has_worker"]:
            (worker,) = spec["workers"]
            assert worker["run_command"] == d["worker_command"]
            assert worker["termination"]["grace_period_seconds"] == d["kill_timeout"]
        else:
            assert "workers" not in spec


def test_app_platform_schema_rejects_broken_specs(projects: dict[str, Path]) -> None:
    spec = _do_specs(projects[IDS[0]])["production"]
    assert _do_errors(spec) == []
    misspelled = copy.deepcopy(spec)
    misspelled["services"][0]["http_prot"] = misspelled["services"][0].pop("http_port")
    bad_rule = copy.deepcopy(spec)
    bad_rule["alerts"][0]["rule"] = "DEPLOY_FAILED"
    bad_job = copy.deepcopy(spec)
    bad_job["jobs"][0]["kind"] = "BEFORE_DEPLOY"
    for broken in (misspelled, bad_rule, bad_job):
        assert _do_errors(broken) != []


# ---------------------------------------------------------------------------------------------
# AWS ECS Fargate
# ---------------------------------------------------------------------------------------------
AWS_ROWS = [(r, i) for r, i in zip(ROWS, IDS, strict=True) if _uses(r, "aws_ecs")]
# Fargate's valid task sizes: CPU units -> allowed memory (MiB).
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
}


@pytest.fixture(scope="module")
def register_shape() -> Any:
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def _botocore_errors(params: dict[str, Any], shape: Any) -> list[str]:
    """ParamValidator's report, plus every string outside its shape's enum (which it skips)."""
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(params, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    errors += _enum_errors(params, shape, "")
    return errors


def _enum_errors(value: Any, shape: Any, where: str) -> list[str]:
    if shape.type_name == "structure" and isinstance(value, dict):
        return [
            error
            for key, item in value.items()
            if key in shape.members
            for error in _enum_errors(item, shape.members[key], f"{where}.{key}")
        ]
    if shape.type_name == "list" and isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _enum_errors(item, shape.member, f"{where}[{i}]")]
    if shape.type_name == "map" and isinstance(value, dict):
        return [e for k, item in value.items() for e in _enum_errors(item, shape.value, f"{where}[{k}]")]
    if shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        return [f"{where}: {value!r} is not one of {shape.enum}"]
    return []


def _task_definition(project: Path, env: str, component: str = "web") -> dict[str, Any]:
    """The task definition exactly as deploy.sh registers it (its own placeholder filling)."""
    result = run(
        [str(project / "deploy/aws/deploy.sh"), "--print-task-definition", env, component],
        env={**os.environ, **FAKE_ARNS},
        timeout=30,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("row", [r for r, _ in AWS_ROWS], ids=[i for _, i in AWS_ROWS])
def test_ecs_task_definitions_are_valid_and_say_what_derive_says(
    row: dict[str, Any], projects: dict[str, Path], register_shape: Any
) -> None:
    project = projects[IDS[ROWS.index(row)]]
    d = _derived(row)
    script = (project / "deploy/aws/deploy.sh").read_text()
    dockerfile = (project / "Dockerfile").read_text().splitlines()
    components = ["web", "worker"] if d["has_worker"] else ["web"]
    assert (project / "deploy/aws/worker-task-definition.json").exists() == d["has_worker"]
    for env in ENVIRONMENTS:
        for component in components:
            task = _task_definition(project, env, component)
            assert _botocore_errors(task, register_shape) == [], (env, component)
            size = d["environments"][env]
            assert (int(task["cpu"]), int(task["memory"])) == (size["cpu_units"], size["memory_mib"])
            assert size["memory_mib"] in FARGATE_SIZES[size["cpu_units"]], "not a Fargate task size"
            assert task["networkMode"] == "awsvpc" and task["requiresCompatibilities"] == ["FARGATE"]
            (container,) = task["containerDefinitions"]
            assert container["name"] == component
            assert container["image"] == FAKE_ARNS["IMAGE"]
            assert container["user"] == f"{d['app_uid']}:{d['app_uid']}"
            assert f"USER {container['user']}" in dockerfile, "ECS runs the image as another user"
            assert container["readonlyRootFilesystem"] is True
            assert {m["containerPath"] for m in container["mountPoints"]} == {"/tmp"}
            assert container["stopTimeout"] == d["kill_timeout"] <= 120  # Fargate's maximum
            env_vars = {e["name"]: e["value"] for e in container["environment"]}
            assert env_vars["ENVIRONMENT"] == env
            assert env_vars["PORT"] == str(d["app_port"])
            assert env_vars["GRACEFUL_TIMEOUT"] == str(d["graceful_timeout"])
            assert [s["name"] for s in container["secrets"]] == d["secret_env_names"]
            for secret in container["secrets"]:
                assert secret["valueFrom"] == f"/{d['image_name']}/{env}/{secret['name']}"
            logs = container["logConfiguration"]
            assert logs["logDriver"] == "awslogs"
            assert logs["options"]["mode"] == "non-blocking", "a slow log sink must not stall the app"
            assert logs["options"]["awslogs-group"] == f"/ecs/{d['image_name']}/{env}"
            assert logs["options"]["awslogs-region"] == row.get("aws_region", "us-east-1")
            if component == "web":
                assert [p["containerPort"] for p in container["portMappings"]] == [d["app_port"]]
                assert container["healthCheck"]["command"] == ["CMD", *d["healthcheck_argv"]]
                assert "command" not in container, "the image's CMD starts the server"
            else:
                assert container["command"] == d["worker_argv"]
                assert "portMappings" not in container and "healthCheck" not in container
    # The one-off migration task runs the new task definition with migration_argv as its command.
    overrides = re.search(r"^overrides='(.*)'$", script, re.MULTILINE)
    if d["has_db"]:
        assert overrides, "deploy.sh has no migration task"
        assert json.loads(overrides.group(1)) == {
            "containerOverrides": [{"name": "web", "command": d["migration_argv"]}]
        }
        assert "aws ecs wait tasks-stopped" in script and "aws ecs wait services-stable" in script
    else:
        assert overrides is None and "run-task" not in script


def test_ecs_validation_catches_what_botocore_alone_misses(projects: dict[str, Path], register_shape: Any) -> None:
    from botocore.validate import ParamValidator

    task = _task_definition(projects[IDS[0]], "production")
    assert _botocore_errors(task, register_shape) == []
    bad_enum = copy.deepcopy(task)
    bad_enum["networkMode"] = "bridgey"
    assert not ParamValidator().validate(bad_enum, register_shape).has_errors()  # the validator's gap
    assert any("bridgey" in e for e in _botocore_errors(bad_enum, register_shape))
    unknown = copy.deepcopy(task)
    unknown["containerDefinitions"][0]["stopTimeOut"] = 30
    wrong_type = copy.deepcopy(task)
    wrong_type["containerDefinitions"][0]["stopTimeout"] = "30"
    for broken in (unknown, wrong_type):
        assert _botocore_errors(broken, register_shape) != []


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain data."""


def _cfn_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.mark.parametrize("row", [r for r, _ in AWS_ROWS], ids=[i for _, i in AWS_ROWS])
def test_cloudformation_says_what_derive_says(row: dict[str, Any], projects: dict[str, Path]) -> None:
    project = projects[IDS[ROWS.index(row)]]
    d = _derived(row)
    cfn = yaml.load((project / "deploy/aws/cloudformation.yaml").read_text(), Loader=_CfnLoader)
    res = cfn["Resources"]
    tg = res["TargetGroup"]["Properties"]
    assert tg["HealthCheckPath"] == d["health_ready_path"] and tg["Port"] == d["app_port"]
    attributes = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == str(d["alb_deregistration_delay"])
    service = res["Service"]["Properties"]
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert service["HealthCheckGracePeriodSeconds"] == d["startup_timeout"]
    assert service["LoadBalancers"][0]["ContainerPort"] == d["app_port"]
    assert ("WorkerService" in res) == d["has_worker"]
    config = cfn["Mappings"]["EnvironmentConfig"]
    for env in ENVIRONMENTS:
        size = d["environments"][env]
        assert (config[env]["MinCapacity"], config[env]["MaxCapacity"]) == (size["min_replicas"], size["max_replicas"])
        assert config[env]["DesiredCount"] == size["replicas"]
    policy = res["CpuScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["TargetValue"] == d["autoscale_cpu_percent"]
    # Security groups: the ALB is open on 80/443 only; the tasks accept the ALB only, on the app port.
    alb_ports = {
        (r["FromPort"], r["ToPort"]) for r in res["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    }
    assert alb_ports == {(80, 80), (443, 443)}
    assert "SecurityGroupIngress" not in res["TaskSecurityGroup"]["Properties"]
    task_ingress = res["TaskIngressFromLoadBalancer"]["Properties"]
    assert (task_ingress["FromPort"], task_ingress["ToPort"]) == (d["app_port"], d["app_port"])
    assert task_ingress["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    # The execution role reads exactly the secrets the task definition names, and nothing else.
    policies = {
        p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in res["ExecutionRole"]["Properties"]["Policies"]
    }
    (read,) = policies["read-secrets"]
    assert read["Action"] == "ssm:GetParameters"
    assert [r["Sub"].rsplit("/", 1)[1] for r in read["Resource"]] == d["secret_env_names"]
    assert "Policies" not in res["TaskRole"]["Properties"] and "ManagedPolicyArns" not in res["TaskRole"]["Properties"]
    wildcard = [s for ss in policies.values() for s in ss if s["Resource"] == "*"]
    assert [s["Action"] for s in wildcard] == ["ecr:GetAuthorizationToken"]


def test_cfn_lint_passes_every_rendered_template(projects: dict[str, Path], tmp_path: Path) -> None:
    templates = [projects[i] / "deploy/aws/cloudformation.yaml" for _, i in AWS_ROWS]
    # One run (cfn-lint starts slowly) that also lints a broken copy, to show it catches one.
    broken = tmp_path / "broken.yaml"
    broken.write_text(templates[0].read_text().replace("HealthCheckPath:", "HealthCheckPth:", 1))
    result = run([_tool("cfn-lint"), *map(str, templates), str(broken)], check=False, timeout=300)
    report = result.stdout + result.stderr
    assert str(broken) in report and "HealthCheckPth" in report, report
    flagged = [str(t) for t in templates if str(t) in report]
    assert flagged == [], f"cfn-lint found errors or warnings:\n{report}"


# ---------------------------------------------------------------------------------------------
# Deploy scripts and docs
# ---------------------------------------------------------------------------------------------
SCRIPTS = {
    "railway": "deploy/railway/deploy.sh",
    "digitalocean": "deploy/digitalocean/deploy.sh",
    "aws_ecs": "deploy/aws/deploy.sh",
}
DOCS = {
    "railway": "docs/deploy/railway.md",
    "digitalocean": "docs/deploy/digitalocean.md",
    "aws_ecs": "docs/deploy/aws.md",
}


def _chosen(kind: dict[str, str]) -> Iterator[tuple[str, Path, str, dict[str, Any]]]:
    for row, name in zip(ROWS, IDS, strict=True):
        for platform, rel in kind.items():
            yield name, Path(rel), platform, row


def test_deploy_scripts_are_executable_and_shellcheck_clean(projects: dict[str, Path]) -> None:
    scripts = []
    for name, rel, platform, row in _chosen(SCRIPTS):
        path = projects[name] / rel
        assert path.exists() == _uses(row, platform), f"{name}: {rel}"
        if path.exists():
            assert path.stat().st_mode & stat.S_IXUSR, f"{name}/{rel} is not executable"
            assert path.read_text().startswith("#!/usr/bin/env bash\n")
            assert "set -euo pipefail" in path.read_text()
            scripts.append(str(path))
    result = run([_tool("shellcheck"), "--severity=style", *scripts], check=False, timeout=120)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("platform", MINE)
def test_deploy_scripts_print_usage_on_bad_arguments(platform: str, projects: dict[str, Path]) -> None:
    script = projects[IDS[0]] / SCRIPTS[platform]
    for args in (["qa"], ["staging", "extra", "more"]):
        result = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "Usage:" in result.stderr, (args, result.stderr)
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_docs_pages_cover_each_platform_and_the_next_steps_point_at_them(projects: dict[str, Path]) -> None:
    for name, rel, platform, row in _chosen(DOCS):
        page = projects[name] / rel
        assert page.exists() == _uses(row, platform), f"{name}: {rel}"
        if not page.exists():
            continue
        text = page.read_text()
        for heading in ("## Create first", "## Deploy", "## Roll back", "## Scale"):
            assert heading in text, f"{name}/{rel} lacks {heading}"
        for secret in _derived(row)["secret_env_names"]:
            assert secret in text, f"{name}/{rel} does not name the secret {secret}"
        assert rel.as_posix() in context.PLATFORM_NEXT_STEPS[platform], "the message after copy points elsewhere"
    # Every placeholder deploy.sh fills into the task definition is documented.
    aws = projects[IDS[0]]
    placeholders = set(re.findall(r"@[A-Z_]+@", (aws / "deploy/aws/task-definition.json").read_text()))
    assert placeholders and placeholders <= set(re.findall(r"@[A-Z_]+@", (aws / DOCS["aws_ecs"]).read_text()))
    railway_postgres = (projects[IDS[0]] / DOCS["railway"]).read_text()
    assert "${{Postgres.DATABASE_URL}}" in railway_postgres


def test_derived_platform_values() -> None:
    slug = "a-very-long-service-name-for-the-platform-ok"[:40]
    d = context.derive({"project_slug": slug, "database": "postgresql", "redis": True, "sentry": True})
    assert all(len(name) <= 32 and not name.endswith("-") for name in d["do_app_names"].values())
    assert d["do_app_names"]["staging"].endswith("-staging")
    assert d["secret_env_names"] == ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "SENTRY_DSN"]
    assert context.derive({"database": "none"})["secret_env_names"] == ["SECRET_KEY"]
    for env in d["environments"].values():
        assert env["memory_mib"] in FARGATE_SIZES[env["cpu_units"]]
    assert d["startup_timeout"] > d["kill_timeout"]


# ---------------------------------------------------------------------------------------------
# deploy/aws/deploy.sh's control flow, against a recording stand-in for the aws CLI
# ---------------------------------------------------------------------------------------------
# No AWS account is reachable from the test machines, so `aws` and the container engine are
# small programs that answer like the real CLI for the calls deploy.sh makes and record them.
FAKE_AWS = r"""#!PYTHON
import json, os, re, sys
from pathlib import Path

state_file = Path(os.environ["FAKE_AWS_STATE"])
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
state_file.write_text(json.dumps(state))  # recorded even when the call fails below

def arg(name):
    return args[args.index(name) + 1] if name in args else ""

def out(text=""):
    state_file.write_text(json.dumps(state))
    print(text)
    sys.exit(0)

cmd = " ".join(args[:2])
query = arg("--query")
if cmd == "cloudformation describe-stacks" and not state["stack_exists"]:
    print("An error occurred (ValidationError): Stack does not exist", file=sys.stderr)
    sys.exit(254)
if cmd == "cloudformation describe-stacks":
    key = re.search(r"OutputKey=='(\w+)'", query)
    if key:
        outputs = {
            "ClusterName": "cluster", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/exec",
            "TaskRoleArn": "arn:aws:iam::123456789012:role/task", "TaskSubnetIds": "subnet-a,subnet-b",
            "TaskSecurityGroupId": "sg-1", "AssignPublicIp": "DISABLED", "LoadBalancerUrl": "http://alb",
            "ServiceName": "web-svc" if "TaskDefinitionArn" in state["services"] else "None",
            "WorkerServiceName": "worker-svc" if "WorkerTaskDefinitionArn" in state["services"] else "None",
        }
        out(outputs.get(key.group(1), "None"))
    if "RepositoryName" in query:
        out("my-service")
    out("Environment\tVpcId\tPublicSubnetIds\tTaskSubnetIds\tTaskDefinitionArn\tWorkerTaskDefinitionArn")
if cmd == "sts get-caller-identity":
    out("123456789012")
if cmd == "ecr describe-images":
    sys.exit(0 if state["image_exists"] else 254)
if cmd == "ecr get-login-password":
    out("token")
if cmd == "ecs register-task-definition":
    task = json.loads(Path(arg("--cli-input-json").removeprefix("file://")).read_text())
    state["registered"].append(task)
    family = task["family"]
    arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:{len(state['registered'])}"
    state["arns"]["worker" if family.endswith("-worker") else "web"] = arn
    out(arn)
if cmd == "ecs run-task":
    out("arn:aws:ecs:us-east-1:123456789012:task/cluster/migrate1")
if cmd == "ecs describe-tasks":
    out(state["migration_exit"] if "exitCode" in query else "Essential container in task exited")
if cmd == "cloudformation update-stack":  # a TaskDefinitionArn parameter creates its service
    state["services"] += re.findall(r"ParameterKey=(\w+),ParameterValue=", " ".join(args))
if cmd == "ecs describe-services":
    component = "web" if arg("--services") == "web-svc" else "worker"
    arn = state["arns"][component]
    if state["rolled_back"]:
        arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/old:1"
    out(f"{arn}\tCOMPLETED")
out()
"""
FAKE_ENGINE = """#!/usr/bin/env bash
echo "$*" >>"$FAKE_ENGINE_LOG"
cat >/dev/null  # login reads the password from stdin
"""


@pytest.fixture(scope="module")
def aws_project(projects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed copy of a project with a database and a worker (deploy.sh tags by commit)."""
    name = IDS[1]
    assert ROWS[1]["database"] != "none" and ROWS[1].get("worker")
    dest = tmp_path_factory.mktemp("aws") / name
    shutil.copytree(projects[name], dest)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    run(["git", "init", "-q"], cwd=dest, env=dict(os.environ))
    run(["git", "add", "-A"], cwd=dest, env=dict(os.environ))
    run([*git, "commit", "-q", "-m", "init"], cwd=dest, env=dict(os.environ))
    return dest


def _deploy_aws(project: Path, tmp: Path, **scenario: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "aws").write_text(FAKE_AWS.replace("PYTHON", sys.executable, 1))
    (bin_dir / "docker").write_text(FAKE_ENGINE)
    for tool in ("aws", "docker"):
        (bin_dir / tool).chmod(0o755)
    state_file = tmp / "state.json"
    state = {"calls": [], "registered": [], "arns": {}, "image_exists": False, "stack_exists": True}
    state["services"] = ["TaskDefinitionArn", "WorkerTaskDefinitionArn"]
    state |= {"migration_exit": "0", "rolled_back": False, **scenario}
    state_file.write_text(json.dumps(state))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AWS_STATE": str(state_file),
        "FAKE_ENGINE_LOG": str(tmp / "engine.log"),
    }
    result = subprocess.run(
        [str(project / "deploy/aws/deploy.sh"), "staging"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, json.loads(state_file.read_text())


def _called(state: dict[str, Any], *prefix: str) -> list[list[str]]:
    return [c for c in state["calls"] if c[: len(prefix)] == list(prefix)]


def test_aws_deploy_builds_registers_migrates_then_updates(aws_project: Path, tmp_path: Path) -> None:
    d = _derived(ROWS[1])
    result, state = _deploy_aws(aws_project, tmp_path)
    assert result.returncode == 0, result.stderr
    commit = run(["git", "rev-parse", "--short=12", "HEAD"], cwd=aws_project, env=dict(os.environ)).stdout.strip()
    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service:{commit}"
    engine = (tmp_path / "engine.log").read_text()
    assert f"push {image}" in engine and "build --platform linux/amd64" in engine
    assert [t["containerDefinitions"][0]["image"] for t in state["registered"]] == [image, image]
    (run_task,) = _called(state, "ecs", "run-task")
    overrides = json.loads(run_task[run_task.index("--overrides") + 1])
    assert overrides["containerOverrides"][0]["command"] == d["migration_argv"]
    assert run_task[run_task.index("--task-definition") + 1] == state["arns"]["web"]
    order = [" ".join(c[:2]) for c in state["calls"]]
    assert order.index("ecs wait") < order.index("ecs update-service"), "migrations finish before the update"
    updates = _called(state, "ecs", "update-service")
    assert [u[u.index("--task-definition") + 1] for u in updates] == [state["arns"]["web"], state["arns"]["worker"]]
    assert len(_called(state, "ecs", "wait", "services-stable")) == 2


def test_aws_deploy_stops_when_the_migration_fails(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, migration_exit="1", image_exists=True)
    assert result.returncode == 1
    assert "migrations failed (exit code 1" in result.stderr
    assert _called(state, "ecs", "update-service") == [] and _called(state, "cloudformation", "update-stack") == []
    assert not (tmp_path / "engine.log").exists(), "an image already in ECR is not rebuilt"


def test_aws_deploy_fails_when_the_circuit_breaker_rolled_back(aws_project: Path, tmp_path: Path) -> None:
    result, _ = _deploy_aws(aws_project, tmp_path, rolled_back=True, image_exists=True)
    assert result.returncode == 1 and "circuit breaker rolled it back" in result.stderr


def test_aws_first_deploy_creates_the_services_through_the_stack(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, services=[], image_exists=True)
    assert result.returncode == 0, result.stderr
    (first, second) = _called(state, "cloudformation", "update-stack")
    assert "--use-previous-template" in first
    assert f"ParameterKey=TaskDefinitionArn,ParameterValue={state['arns']['web']}" in first
    assert "ParameterKey=VpcId,UsePreviousValue=true" in first
    assert "ParameterKey=TaskDefinitionArn,UsePreviousValue=true" not in first
    assert f"ParameterKey=WorkerTaskDefinitionArn,ParameterValue={state['arns']['worker']}" in second
    assert _called(state, "ecs", "update-service") == []


# ---------------------------------------------------------------------------------------------
# deploy/digitalocean/deploy.sh against a recording CLI (Railway's: test_railway.py)
# ---------------------------------------------------------------------------------------------
FAKE_DOCTL = r"""#!PYTHON
import json, os, shutil, sys
from pathlib import Path

state_file = Path(os.environ["FAKE_STATE"])
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
if "--spec" in args or args[:3] == ["apps", "spec", "validate"]:
    spec = args[args.index("--spec") + 1] if "--spec" in args else args[3]
    state["specs"].append(Path(spec).read_text())
output = {
    ("apps", "list"): "\n".join(f"{i} {name}" for i, name in state["apps"].items()),
    ("apps", "create"): "new-app-id",
    ("apps", "update"): "",
    ("apps", "list-deployments"): state["phase"] + "\nACTIVE",
    ("apps", "get"): "my-service.ondigitalocean.app",
}.get(tuple(args[:2]), "")
state_file.write_text(json.dumps(state))
print(output)
"""


def _run_with_fake(
    project: Path, tmp: Path, tool: str, source: str, args: list[str], **state: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / tool).write_text(source.replace("PYTHON", sys.executable, 1))
    (bin_dir / tool).chmod(0o755)
    state_file = tmp / "state.json"
    state_file.write_text(json.dumps({"calls": [], "specs": [], **state}))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state_file)}
    env.pop("GITHUB_REPOSITORY", None)
    result = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    return result, json.loads(state_file.read_text())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_digitalocean_deploy_applies_the_environment_spec(env: str, projects: dict[str, Path], tmp_path: Path) -> None:
    project = projects[IDS[1]]
    names = _derived(ROWS[1])["do_app_names"]
    script = [str(project / "deploy/digitalocean/deploy.sh"), env]
    result, state = _run_with_fake(
        project, tmp_path, "doctl", FAKE_DOCTL, ["env", "DO_GITHUB_REPO=acme/orders", *script], apps={}, phase="ACTIVE"
    )
    assert result.returncode == 0, result.stderr
    validated, created = state["specs"]
    assert validated == created
    spec = yaml.safe_load(created)
    assert _do_errors(spec) == []
    expected = _do_specs(project)[env]
    for component in ("services", "jobs", "workers"):
        for item in expected.get(component, []):
            item["github"]["repo"] = "acme/orders"
    assert spec == expected, "deploy.sh applies exactly the environment's spec, with the repository filled in"
    assert spec["name"] == names[env]
    # The second run finds the app by name and updates it; a failed deployment fails the script.
    result, state = _run_with_fake(
        project,
        tmp_path,
        "doctl",
        FAKE_DOCTL,
        ["env", "DO_GITHUB_REPO=acme/orders", *script],
        apps={"app-1": names[env]},
        phase="ERROR",
    )
    assert [c[:3] for c in state["calls"] if c[1] in ("create", "update")] == [["apps", "update", "app-1"]]
    assert result.returncode == 1 and "ended in phase ERROR" in result.stderr


def test_digitalocean_deploy_needs_a_repository(projects: dict[str, Path], tmp_path: Path) -> None:
    project = projects[IDS[1]]  # not a git checkout: no origin remote to read
    result, state = _run_with_fake(
        project,
        tmp_path,
        "doctl",
        FAKE_DOCTL,
        [str(project / "deploy/digitalocean/deploy.sh")],
        apps={},
        phase="ACTIVE",
    )
    assert result.returncode == 2 and "DO_GITHUB_REPO" in result.stderr
    assert state["calls"] == []


def test_aws_deploy_needs_the_stack(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, stack_exists=False)
    assert result.returncode == 1 and "create it from deploy/aws/cloudformation.yaml first" in result.stderr
    assert [c[:2] for c in state["calls"]] == [["cloudformation", "describe-stacks"]]
