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
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import ROOT, render_template, run
from deploy_checks import derived_from, installed

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py, the single source of derived values

# One xdist worker renders the answer sets once and runs every test of this module on them.
pytestmark = pytest.mark.xdist_group("platforms")

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


@pytest.fixture(scope="module")
def projects(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every answer set of ROWS rendered once for this module (tasks skipped)."""
    base = tmp_path_factory.mktemp("platforms")
    return {name: render_template(template_src, base / name, **row) for name, row in zip(IDS, ROWS, strict=True)}


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
    d = derived_from(row)
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
        # Issue 13.3: every component runs the image CI built, by digest; nothing builds from a
        # branch and nothing deploys on push, around CI and the production approval.
        for component in [web, *spec.get("jobs", []), *spec.get("workers", [])]:
            assert "github" not in component and "dockerfile_path" not in component, component["name"]
            assert component["image"] == {
                "registry_type": "GHCR",
                "registry": "your-github-user",
                "repository": d["image_name"],
                "digest": "IMAGE_DIGEST",
            }, component["name"]
        assert "deploy_on_push" not in json.dumps(spec)
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
    d = derived_from(row)
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
            assert sorted(s["name"] for s in container["secrets"]) == sorted(d["secret_env_names"])
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
    overrides = re.search(r"^\s*overrides='(.*)'$", script, re.MULTILINE)
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
    d = derived_from(row)
    cfn = yaml.load((project / "deploy/aws/cloudformation.yaml").read_text(), Loader=_CfnLoader)
    res = cfn["Resources"]
    tg = res["TargetGroup"]["Properties"]
    # Issue 13.4: ECS stops every task whose target fails the load balancer's check. On the ready
    # path a database blip would make it replace all web tasks at once (and their replacements),
    # so the load balancer checks liveness; readiness gates the deploy (docs/container.md).
    assert tg["HealthCheckPath"] == d["health_live_path"] and tg["Port"] == d["app_port"]
    page = (project / "docs/deploy/aws.md").read_text()
    assert f"target group checks `{d['health_live_path']}`" in page, "the docs say what the target group checks"
    (web,) = _task_definition(project, "staging")["containerDefinitions"]
    assert web["healthCheck"]["command"] == ["CMD", *d["healthcheck_argv"]], "the container check is liveness too"
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
    result = run([installed("cfn-lint"), *map(str, templates), str(broken)], check=False, timeout=300)
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
    result = run([installed("shellcheck"), "--severity=style", *scripts], check=False, timeout=120)
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
        for secret in derived_from(row)["secret_env_names"]:
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

PUSHED = "sha256:" + "cd" * 32  # what ECR stores for a pushed tag
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
            "TaskSecurityGroupId": "sg-1", "AssignPublicIp": "DISABLED", "LoadBalancerUrl": state["lb_url"],
            "ServiceName": "web-svc" if "TaskDefinitionArn" in state["services"] else "None",
            "WorkerServiceName": "worker-svc" if "WorkerTaskDefinitionArn" in state["services"] else "None",
        }
        out("None" if key.group(1) in state.get("missing", []) else outputs.get(key.group(1), "None"))
    if "RepositoryName" in query:
        out("None" if "RepositoryName" in state.get("missing", []) else "my-service")
    out("Environment\tVpcId\tPublicSubnetIds\tTaskSubnetIds\tTaskDefinitionArn\tWorkerTaskDefinitionArn")
if cmd == "ecr describe-repositories":  # the repository's URI, as ECR reports it
    out("123456789012.dkr.ecr.us-east-1.amazonaws.com/" + arg("--repository-names"))
if cmd == "ssm get-parameters":  # names that exist; absent ones are InvalidParameters
    names = args[args.index("--names") + 1 :]
    names = names[: next((i for i, n in enumerate(names) if n.startswith("--")), len(names))]
    out("\t".join(n for n in names if n in state.get("ssm_parameters", names)))
if cmd == "ecr describe-images":  # by tag: the pushed commit; by digest: what was copied in
    ids = arg("--image-ids")
    if ids.startswith("imageDigest="):
        found = ids.removeprefix("imageDigest=") in state["ecr_digests"]
    else:
        found = state["image_exists"]
    if not found:
        print("An error occurred (ImageNotFoundException)", file=sys.stderr)
        sys.exit(254)
    out(PUSHED if "imageDigest" in query else "")
if cmd == "ecr get-login-password":
    out("token")
if cmd == "ecs register-task-definition":
    task = json.loads(Path(arg("--cli-input-json").removeprefix("file://")).read_text())
    state["registered"].append(task)
    family = task["family"]
    arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:{len(state['tags']) + 1}"
    state["arns"]["worker" if family.endswith("-worker") else "web"] = arn
    tags = dict(p.split("=", 1) for p in arg("--tags").split(",") if "=" in p)
    state["tags"][arn] = tags.get("value", "None") if tags.get("key") == "rendered-sha256" else "None"
    out(arn)
if cmd == "ecs describe-task-definition":  # the rendered-sha256 tag of a revision
    out(state["tags"].get(arg("--task-definition"), "None"))
if cmd == "ecs update-service":
    state["running"]["web" if arg("--service") == "web-svc" else "worker"] = arg("--task-definition")
if cmd == "ecs run-task":
    out("arn:aws:ecs:us-east-1:123456789012:task/cluster/migrate1")
if cmd == "ecs describe-tasks":
    out(state["migration_exit"] if "exitCode" in query else "Essential container in task exited")
if cmd == "cloudformation update-stack":  # a TaskDefinitionArn parameter creates its service
    for key, value in re.findall(r"ParameterKey=(\w+),ParameterValue=(\S+)", " ".join(args)):
        state["services"].append(key)
        state["running"]["worker" if key.startswith("Worker") else "web"] = value
if cmd == "ecs describe-services":
    component = "web" if arg("--services") == "web-svc" else "worker"
    arn = state["running"].get(component, "arn:aws:ecs:us-east-1:123456789012:task-definition/old:1")
    if state["rolled_back"]:
        arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/old:1"
    out(arn if query == "services[0].taskDefinition" else f"{arn}\tCOMPLETED")
out()
"""
PUSHED = "sha256:" + "cd" * 32  # the digest ECR reports for the image a local build pushed
# The container engine records its calls; `buildx imagetools create` copies the source digest into
# ECR (or, with copy_changes_digest, another one, as a copy that rewrote the manifest would), and
# `buildx imagetools inspect` finds nothing (no cosign signature beside the image).
FAKE_ENGINE = r"""#!PYTHON
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_ENGINE_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if args[:1] == ["login"]:
    sys.stdin.read()
if args[:3] == ["buildx", "imagetools", "inspect"]:  # the source holds no cosign signature
    print(f"ERROR: {args[-1]}: not found", file=sys.stderr)
    sys.exit(1)
# Only push and the copy touch the state: login runs at the same time as `aws ecr get-login-password`.
if args[:1] == ["push"] or args[:3] == ["buildx", "imagetools", "create"]:
    state_file = Path(os.environ["FAKE_AWS_STATE"])
    state = json.loads(state_file.read_text())
    if args[:1] == ["push"]:
        state["image_exists"] = True
    else:
        digest = args[-1].rsplit("@", 1)[1]
        state["ecr_digests"].append("sha256:" + "ef" * 32 if state.get("copy_changes_digest") else digest)
    state_file.write_text(json.dumps(state))
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


def _deploy_aws(
    project: Path, tmp: Path, image_ref: str | None = None, **scenario: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """deploy/aws/deploy.sh staging against the recording CLI; IMAGE_REF when image_ref is given."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "aws").write_text(FAKE_AWS.replace("PYTHON", sys.executable, 1))
    (bin_dir / "docker").write_text(FAKE_ENGINE.replace("PYTHON", sys.executable, 1))
    for tool in ("aws", "docker"):
        (bin_dir / tool).chmod(0o755)
    state_file = tmp / "state.json"
    state = {"calls": [], "registered": [], "arns": {}, "image_exists": False, "stack_exists": True}
    state |= {"ecr_digests": [], "tags": {}, "running": {}}
    state["services"] = ["TaskDefinitionArn", "WorkerTaskDefinitionArn"]
    state |= {"migration_exit": "0", "rolled_back": False, **scenario}
    # The load balancer: answers the ready path 200, or 503 with ready=False (a new release that
    # is alive but cannot reach its database).
    ready_status = 200 if scenario.get("ready", True) else 503
    ready_path = derived_from(ROWS[1])["health_ready_path"]

    class Balancer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(ready_status if self.path == ready_path else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Balancer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["lb_url"] = f"http://127.0.0.1:{server.server_address[1]}"
    state_file.write_text(json.dumps(state))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AWS_STATE": str(state_file),
        "FAKE_ENGINE_LOG": str(tmp / "engine.log"),
    }
    env.pop("IMAGE_REF", None)
    try:
        result = subprocess.run(
            [str(project / "deploy/aws/deploy.sh"), "staging"],
            cwd=project,
            env={**env, "READY_DEADLINE": "3", **({"IMAGE_REF": image_ref} if image_ref is not None else {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    return result, json.loads(state_file.read_text())


def _called(state: dict[str, Any], *prefix: str) -> list[list[str]]:
    return [c for c in state["calls"] if c[: len(prefix)] == list(prefix)]


def test_aws_deploy_builds_registers_migrates_then_updates(aws_project: Path, tmp_path: Path) -> None:
    d = derived_from(ROWS[1])
    result, state = _deploy_aws(aws_project, tmp_path)
    assert result.returncode == 0, result.stderr
    commit = run(["git", "rev-parse", "--short=12", "HEAD"], cwd=aws_project, env=dict(os.environ)).stdout.strip()
    tagged = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service:{commit}"
    engine = (tmp_path / "engine.log").read_text()
    assert f"push {tagged}" in engine and "build --platform linux/amd64" in engine
    # The task definitions name what the push stored, by digest, not the tag.
    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service@{PUSHED}"
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


CI_IMAGE = "ghcr.io/acme/my-service@sha256:" + "ab" * 32
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service"


def test_aws_deploy_promotes_the_ci_image_to_ecr_by_digest(aws_project: Path, tmp_path: Path) -> None:
    """IMAGE_REF: the image CI built is copied to ECR as it is (same digest) and deployed by that
    digest; nothing is built or pushed."""
    result, state = _deploy_aws(aws_project, tmp_path, image_ref=CI_IMAGE)
    assert result.returncode == 0, result.stderr
    digest = CI_IMAGE.rsplit("@", 1)[1]
    engine = (tmp_path / "engine.log").read_text().splitlines()
    copy = f"buildx imagetools create --prefer-index=false --tag {ECR}:sha256-{'ab' * 32} {CI_IMAGE}"
    assert copy in engine and not [c for c in engine if c.startswith(("build ", "push "))], engine
    assert state["ecr_digests"] == [digest]
    assert [t["containerDefinitions"][0]["image"] for t in state["registered"]] == [f"{ECR}@{digest}"] * 2
    assert len(_called(state, "ecs", "run-task")) == 1 and len(_called(state, "ecs", "update-service")) == 2
    assert f"Deployed {ECR}@{digest} to staging" in result.stdout


def test_aws_deploy_of_an_unchanged_digest_registers_and_rolls_out_nothing(aws_project: Path, tmp_path: Path) -> None:
    """The same IMAGE_REF again: the image is in ECR, each service runs a revision rendered the same
    way (its rendered-sha256 tag), so nothing is copied, registered, migrated or updated."""
    first, state = _deploy_aws(aws_project, tmp_path / "first", image_ref=CI_IMAGE)
    assert first.returncode == 0, first.stderr
    kept = {k: state[k] for k in ("ecr_digests", "tags", "running", "arns")}
    second, again = _deploy_aws(aws_project, tmp_path / "second", image_ref=CI_IMAGE, **kept)
    assert second.returncode == 0, second.stderr
    assert "already in ECR: not copying" in second.stdout
    assert (
        not (tmp_path / "second/engine.log").exists()
        or "imagetools create" not in (tmp_path / "second/engine.log").read_text()
    )
    for call in (("ecs", "register-task-definition"), ("ecs", "run-task"), ("ecs", "update-service")):
        assert _called(again, *call) == [], call
    assert again["running"] == state["running"]
    assert second.stdout.count("nothing to roll out") == 2, second.stdout
    # Another digest is a new release: copied, registered, migrated, rolled out.
    other = CI_IMAGE[:-64] + "12" * 32
    third, new = _deploy_aws(aws_project, tmp_path / "third", image_ref=other, **kept)
    assert third.returncode == 0, third.stderr
    assert len(_called(new, "ecs", "register-task-definition")) == 2 and len(_called(new, "ecs", "run-task")) == 1
    assert new["running"]["web"] != state["running"]["web"]


@pytest.mark.parametrize(
    "image_ref",
    [
        "ghcr.io/acme/my-service:main",
        "ghcr.io/acme/my-service",
        "ghcr.io/acme/my-service@sha256:abc",
        "sha256:" + "ab" * 32,
        "",
    ],
)
def test_aws_deploy_refuses_an_image_ref_that_is_not_a_digest(
    aws_project: Path, tmp_path: Path, image_ref: str
) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, image_ref=image_ref)
    assert result.returncode == 2, result.stderr
    assert "IMAGE_REF" in result.stderr and "@sha256:" in result.stderr and image_ref in result.stderr
    assert state["calls"] == [], "refused before any AWS call"


def test_aws_deploy_stops_when_the_copy_changes_the_digest(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, image_ref=CI_IMAGE, copy_changes_digest=True)
    assert result.returncode == 1 and "nothing was deployed" in result.stderr, result.stderr
    assert _called(state, "ecs", "register-task-definition") == []


def test_aws_deploy_stops_when_the_migration_fails(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, migration_exit="1", image_exists=True)
    assert result.returncode == 1
    assert "migrations failed (exit code 1" in result.stderr
    assert _called(state, "ecs", "update-service") == [] and _called(state, "cloudformation", "update-stack") == []
    assert not (tmp_path / "engine.log").exists(), "an image already in ECR is not rebuilt"


def test_aws_deploy_fails_when_the_release_is_alive_but_not_ready(aws_project: Path, tmp_path: Path) -> None:
    """The load balancer checks liveness (so an outage restarts nothing); readiness is the deploy's
    gate: a stable service whose load balancer answers 503 on the ready path fails the deploy."""
    result, state = _deploy_aws(aws_project, tmp_path, image_exists=True, ready=False)
    assert result.returncode == 1, result.stderr
    assert "not ready" in result.stderr and derived_from(ROWS[1])["health_ready_path"] in result.stderr
    assert len(_called(state, "ecs", "wait", "services-stable")) == 2


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
# A doctl that keeps App Platform's state between runs and applies its rule for SECRET values
# (DigitalOcean's app spec reference, `envs[].value`: "encrypted on first submission; on
# following submissions, the encrypted value should be used"): a plain value is stored
# encrypted as EV[...], an EV[...] value keeps the stored secret, and a SECRET without a value
# is stored empty. A deployment whose SECRET_KEY (or another secret) is empty fails, as the app
# refuses to start without it; `apps spec get` returns the live spec with the encrypted values.
FAKE_DOCTL = r"""#!PYTHON
import base64, json, os, sys
from pathlib import Path

import yaml

state_file = Path(os.environ["FAKE_STATE"])
state = json.loads(state_file.read_text())
args = sys.argv[1:]
state["calls"].append(args)
out = ""


def save():
    state_file.write_text(json.dumps(state))


def components(spec):
    return [c for kind in ("services", "workers", "jobs") for c in spec.get(kind, [])]


def submit(spec, live):
    # The spec App Platform stores, and whether its deployment goes ACTIVE.
    stored, empty = json.loads(json.dumps(spec)), []
    old = {(c["name"], e["key"]): e.get("value") for c in components(live or {}) for e in c.get("envs", [])}
    for component in components(stored):
        for env in component.get("envs", []):
            if env.get("type") != "SECRET":
                continue
            value = env.get("value")
            if value is None or value == "":
                env.pop("value", None)
                empty.append(f"{component['name']}.{env['key']}")
            elif value.startswith("EV["):
                if value != old.get((component["name"], env["key"])):
                    print(f"Error: invalid encrypted value for {env['key']}", file=sys.stderr)
                    save()
                    sys.exit(1)
            else:
                env["value"] = "EV[1:" + base64.b64encode(value.encode()).decode() + "]"
    failed = empty or state.get("fail")
    state["deployments"].append({"phase": "ERROR" if failed else "ACTIVE", "empty": empty})
    return stored


if args[:3] == ["apps", "spec", "validate"]:
    state["specs"].append(Path(args[3]).read_text())
elif args[:2] == ["apps", "list"]:
    out = "\n".join(f"{i} {app['spec']['name']}" for i, app in state["apps"].items())
elif args[:2] == ["apps", "create"]:
    text = Path(args[args.index("--spec") + 1]).read_text()
    state["specs"].append(text)
    state["apps"]["app-1"] = {"spec": submit(yaml.safe_load(text), None)}
    out = "app-1"
elif args[:2] == ["apps", "update"]:
    text = Path(args[args.index("--spec") + 1]).read_text()
    state["specs"].append(text)
    app = state["apps"][args[2]]
    app["spec"] = submit(yaml.safe_load(text), app["spec"])
elif args[:3] == ["apps", "spec", "get"]:
    assert args[args.index("--format") + 1] == "json", args
    out = json.dumps(state["apps"][args[3]]["spec"])
elif args[:2] == ["apps", "list-deployments"]:
    out = "\n".join(d["phase"] for d in reversed(state["deployments"]))
elif args[:2] == ["apps", "get"]:
    out = "my-service.ondigitalocean.app"
else:
    print(f"fake doctl: unexpected {args}", file=sys.stderr)
    save()
    sys.exit(2)
save()
print(out)
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


DIGESTS = ["sha256:" + c * 64 for c in "abc"]


def _do_deploy(
    project: Path, tmp: Path, env: str, digest: str, secrets: dict[str, str] | None = None, **state: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One run of deploy/digitalocean/deploy.sh against the stateful fake (state kept in tmp)."""
    state_file = tmp / "state.json"
    previous = json.loads(state_file.read_text()) if state_file.exists() else {"apps": {}, "deployments": []}
    command = ["env", f"IMAGE_REF=ghcr.io/acme/orders@{digest}"]
    if secrets is not None:
        secrets_file = tmp / f"{env}.secrets"
        secrets_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
        command.append(f"DO_SECRETS_FILE={secrets_file}")
    command += [str(project / "deploy/digitalocean/deploy.sh"), env]
    return _run_with_fake(project, tmp, "doctl", FAKE_DOCTL, command, **{**previous, **state})


def _secrets(row: dict[str, Any]) -> dict[str, str]:
    """Placeholder values of the secrets the spec declares (DATABASE_URL is bound, not set)."""
    names = [n for n in derived_from(row)["secret_env_names"] if n != "DATABASE_URL"]
    return {n: f"orders_staging_your_{n.lower()}_here" for n in names}


def _stored(state: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    spec = state["apps"]["app-1"]["spec"]
    return {
        (c["name"], e["key"]): e.get("value")
        for kind in ("services", "workers", "jobs")
        for c in spec.get(kind, [])
        for e in c.get("envs", [])
        if e.get("type") == "SECRET"
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_digitalocean_keeps_its_secrets_across_deploys_and_rolls_back_by_digest(
    env: str, projects: dict[str, Path], tmp_path: Path
) -> None:
    """Issues 13.2 and 13.3: the first deploy carries the secrets (DigitalOcean encrypts them),
    every later one resubmits the live encrypted values, and a rollback is the previous digest."""
    row = ROWS[1]  # PostgreSQL, Redis, a Celery worker and Sentry: secrets in every component
    project = projects[IDS[1]]
    names = derived_from(row)["do_app_names"]
    secrets = _secrets(row)
    assert {"SECRET_KEY", "REDIS_URL", "SENTRY_DSN"} <= set(secrets)

    # A first deploy without the secrets would create an app that cannot start: refused, nothing sent.
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[0])
    assert result.returncode == 2, result.stderr
    assert "DO_SECRETS_FILE" in result.stderr and "SECRET_KEY" in result.stderr
    assert not [c for c in state["calls"] if c[:2] in (["apps", "create"], ["apps", "update"])]

    result, state = _do_deploy(project, tmp_path, env, DIGESTS[0], secrets)
    assert result.returncode == 0, result.stderr
    assert [c[:2] for c in state["calls"] if c[1] in ("create", "update")] == [["apps", "create"]]
    created = yaml.safe_load(state["specs"][-1])
    assert created["name"] == names[env]
    assert _do_errors(created) == []
    stored = _stored(state)
    assert stored and all(v and v.startswith("EV[") for v in stored.values()), stored
    images = {c["name"]: c["image"] for k in ("services", "workers", "jobs") for c in created.get(k, [])}
    assert set(images) >= {"web", "worker", "migrate"}
    for image in images.values():
        assert image == {"registry_type": "GHCR", "registry": "acme", "repository": "orders", "digest": DIGESTS[0]}

    # Later deploys carry no secrets: the live encrypted values are resubmitted, none is wiped.
    for digest in (DIGESTS[1], DIGESTS[0]):  # a new image, then a rollback to the previous one
        result, state = _do_deploy(project, tmp_path, env, digest)
        assert result.returncode == 0, result.stderr
        assert state["deployments"][-1] == {"phase": "ACTIVE", "empty": []}
        assert _stored(state) == stored, "the secrets survive the redeploy"
        live = state["apps"]["app-1"]["spec"]
        assert {c["image"]["digest"] for k in ("services", "workers", "jobs") for c in live.get(k, [])} == {digest}
        assert _do_errors(yaml.safe_load(state["specs"][-1])) == []

    # A rotation: the one secret given in the file is replaced, the others stay.
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[2], {"SECRET_KEY": "orders_staging_rotated_here"})
    assert result.returncode == 0, result.stderr
    rotated = _stored(state)
    assert rotated[("web", "SECRET_KEY")] != stored[("web", "SECRET_KEY")]
    assert {k: v for k, v in rotated.items() if k[1] != "SECRET_KEY"} == {
        k: v for k, v in stored.items() if k[1] != "SECRET_KEY"
    }


@pytest.mark.parametrize("env", ["staging", "production"])
def test_digitalocean_runs_without_an_optional_secret_and_takes_it_when_given(
    env: str, projects: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 13.5 on App Platform: SENTRY_DSN is optional (the app runs without it). A first
    deploy without it creates the app with no SENTRY_DSN at all, since a SECRET without a value
    would be refused; given later, it is set and kept like the others."""
    row = ROWS[1]  # Sentry on: SENTRY_DSN in every component
    project = projects[IDS[1]]
    required = {k: v for k, v in _secrets(row).items() if k != "SENTRY_DSN"}
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[0], required)
    assert result.returncode == 0, result.stderr
    created = yaml.safe_load(state["specs"][-1])
    assert _do_errors(created) == []
    keys = {e["key"] for k in ("services", "workers", "jobs") for c in created.get(k, []) for e in c.get("envs", [])}
    assert "SECRET_KEY" in keys and "SENTRY_DSN" not in keys, keys
    # A redeploy without it still runs; with it, every component gets it and keeps it after.
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[1])
    assert result.returncode == 0, result.stderr
    dsn = {"SENTRY_DSN": _secrets(row)["SENTRY_DSN"]}
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[2], dsn)
    assert result.returncode == 0, result.stderr
    assert {c for (c, key) in _stored(state) if key == "SENTRY_DSN"} >= {"web"}
    result, state = _do_deploy(project, tmp_path, env, DIGESTS[0])
    assert result.returncode == 0, result.stderr
    assert {c for (c, key) in _stored(state) if key == "SENTRY_DSN"} >= {"web"}, "the given DSN is kept"


def test_the_fake_doctl_wipes_a_secret_resubmitted_without_its_value(projects: dict[str, Path], tmp_path: Path) -> None:
    """The rule the test above relies on: resubmitting the committed spec (SECRETs without values)
    leaves the app without its secrets and the deployment fails, as the old deploy.sh did."""
    project = projects[IDS[1]]
    result, state = _do_deploy(project, tmp_path, "staging", DIGESTS[0], _secrets(ROWS[1]))
    assert result.returncode == 0, result.stderr
    committed = tmp_path / "committed.yaml"
    text = (project / ".do/deploy.template.yaml").read_text()
    committed.write_text(yaml.safe_dump(yaml.safe_load(text)["spec"]))
    result, state = _run_with_fake(
        project,
        tmp_path,
        "doctl",
        FAKE_DOCTL,
        ["doctl", "apps", "update", "app-1", "--spec", str(committed)],
        apps=state["apps"],
        deployments=state["deployments"],
    )
    assert state["deployments"][-1]["phase"] == "ERROR"
    assert not any(_stored(state).values())


def test_digitalocean_deploy_fails_when_the_deployment_fails(projects: dict[str, Path], tmp_path: Path) -> None:
    result, _ = _do_deploy(projects[IDS[1]], tmp_path, "production", DIGESTS[0], _secrets(ROWS[1]), fail=True)
    assert result.returncode == 1 and "ended in phase ERROR" in result.stderr


def test_digitalocean_deploy_names_a_secret_the_live_app_lost(projects: dict[str, Path], tmp_path: Path) -> None:
    project = projects[IDS[1]]
    result, state = _do_deploy(project, tmp_path, "staging", DIGESTS[0], _secrets(ROWS[1]))
    assert result.returncode == 0, result.stderr
    # The live app lost a secret (removed in the control panel): the deploy says which and stops.
    del state["apps"]["app-1"]["spec"]["services"][0]["envs"][-1]
    spec = state["apps"]["app-1"]["spec"]
    for component in spec["services"]:
        for e in component["envs"]:
            if e["key"] == "SECRET_KEY":
                e.pop("value")
    (tmp_path / "state.json").write_text(json.dumps(state))
    result, state = _do_deploy(project, tmp_path, "staging", DIGESTS[1])
    assert result.returncode == 2 and "web.SECRET_KEY" in result.stderr and "DO_SECRETS_FILE" in result.stderr
    assert [c for c in state["calls"] if c[:2] == ["apps", "update"]] == []


def test_digitalocean_deploy_needs_the_image_by_digest(projects: dict[str, Path], tmp_path: Path) -> None:
    project = projects[IDS[1]]
    script = str(project / "deploy/digitalocean/deploy.sh")
    wrong = ("ghcr.io/acme/orders:latest", "ghcr.io/acme/orders@sha256:abc", "quay.io/acme/orders@" + DIGESTS[0])
    for image in (None, *wrong):
        command = ["env", "-u", "IMAGE_REF"] + ([f"IMAGE_REF={image}"] if image else []) + [script, "staging"]
        result, state = _run_with_fake(project, tmp_path, "doctl", FAKE_DOCTL, command, apps={}, deployments=[])
        assert result.returncode == 2 and "IMAGE_REF" in result.stderr, (image, result.stderr)
        assert state["calls"] == []


def test_aws_deploy_needs_the_stack(aws_project: Path, tmp_path: Path) -> None:
    result, state = _deploy_aws(aws_project, tmp_path, stack_exists=False)
    assert result.returncode == 1 and "create it from deploy/aws/cloudformation.yaml first" in result.stderr
    assert [c[:2] for c in state["calls"]] == [["cloudformation", "describe-stacks"]]


def _stack_reads(script: str) -> tuple[set[str], set[str]]:
    """The stack outputs and parameters deploy/aws/deploy.sh asks CloudFormation for."""
    outputs = set(re.findall(r"\b(?:output|optional_output) ([A-Z]\w+)", script))
    parameters = set(re.findall(r"ParameterKey=='(\w+)'", script))
    for output_name, parameter in re.findall(r"^deploy_service (\w+) (\w+) ", script, re.M):
        outputs.add(output_name)
        parameters.add(parameter)
    return outputs, parameters


@pytest.mark.parametrize("row", [r for r, _ in AWS_ROWS], ids=[i for _, i in AWS_ROWS])
def test_every_stack_output_and_parameter_the_aws_script_reads_is_in_the_template(
    row: dict[str, Any], projects: dict[str, Path]
) -> None:
    """Issue 13.10: rename an output and the deploy must not "succeed" against a stub."""
    project = projects[IDS[ROWS.index(row)]]
    script = (project / "deploy/aws/deploy.sh").read_text()
    cfn = yaml.load((project / "deploy/aws/cloudformation.yaml").read_text(), Loader=_CfnLoader)
    outputs, parameters = _stack_reads(script)
    assert {"ClusterName", "ExecutionRoleArn", "TaskRoleArn", "ServiceName", "LoadBalancerUrl"} <= outputs
    assert {"RepositoryName", "TaskDefinitionArn"} <= parameters
    assert outputs - set(cfn["Outputs"]) == set(), "outputs deploy.sh reads that the stack lacks"
    assert parameters - set(cfn["Parameters"]) == set(), "parameters deploy.sh reads that the stack lacks"
    # The check sees a rename.
    renamed = script.replace("output TaskRoleArn", "output TaskRoleARN")
    assert _stack_reads(renamed)[0] - set(cfn["Outputs"]) == {"TaskRoleARN"}


@pytest.mark.parametrize("missing", ["ClusterName", "TaskSubnetIds", "RepositoryName"])
def test_aws_deploy_refuses_a_stack_output_that_is_none(aws_project: Path, tmp_path: Path, missing: str) -> None:
    """The CLI prints `None` for an output or parameter the stack lacks: the script stops there,
    naming it, before it registers, migrates or updates anything."""
    result, state = _deploy_aws(aws_project, tmp_path, missing=[missing], image_exists=True)
    assert result.returncode == 1, result.stderr
    assert f"has no {'parameter' if missing == 'RepositoryName' else 'output'} {missing}" in result.stderr
    for call in (("ecs", "register-task-definition"), ("ecs", "run-task"), ("ecs", "update-service")):
        assert _called(state, *call) == [], call


@pytest.mark.parametrize("dsn_set", [False, True], ids=["no-dsn", "dsn"])
def test_aws_optional_secrets_are_optional(
    aws_project: Path, tmp_path: Path, dsn_set: bool, register_shape: Any
) -> None:
    """Issue 13.5: SSM cannot hold an empty value and a dummy DSN crashes sentry_sdk.init, so a
    task that requires /<slug>/<env>/SENTRY_DSN cannot start without a real DSN. The deploy asks
    SSM which optional parameters exist and references only those; required ones always."""
    d = derived_from(ROWS[1])
    assert d["optional_secret_env_names"] == ["SENTRY_DSN"]
    prefix = "/my-service/staging/"
    parameters = [prefix + n for n in d["secret_env_names"] if dsn_set or n != "SENTRY_DSN"]
    result, state = _deploy_aws(aws_project, tmp_path, image_exists=True, ssm_parameters=parameters)
    assert result.returncode == 0, result.stderr
    assert len(state["registered"]) == 2
    for task in state["registered"]:
        secrets = {s["name"]: s["valueFrom"] for s in task["containerDefinitions"][0]["secrets"]}
        expected = [n for n in d["secret_env_names"] if dsn_set or n != "SENTRY_DSN"]
        assert sorted(secrets) == sorted(expected), task["family"]
        assert all(v == prefix + k for k, v in secrets.items())
        assert _botocore_errors(task, register_shape) == [], task["family"]
    (lookup,) = _called(state, "ssm", "get-parameters")
    assert lookup[lookup.index("--names") + 1 :][:1] == [prefix + "SENTRY_DSN"]
