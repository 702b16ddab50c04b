"""AWS Elastic Beanstalk (`aws_eb`): what can be proven offline, since no emulator exists.

- the environment's OptionSettings in deploy/aws_eb/cloudformation.yaml, resolved per environment
  as CloudFormation would (Ref, FindInMap, Join, Sub, If), against tests/schemas/elastic-beanstalk/
  (written from AWS's documented namespaces and options), and read back against derive();
- the roles (least privilege), cfn-lint on every rendered template;
- the application version's files as deploy.sh writes them: docker-compose.yml through Docker
  Compose itself, .ebextensions against the documented keys;
- deploy.sh's control flow against tests/fake_aws.py, a recording aws CLI that refuses every call
  botocore's service models (elasticbeanstalk, ecr, s3, sts, cloudformation) would refuse.
Nothing here runs on AWS: docs/deploy/elastic-beanstalk.md of a generated project says so too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import fake_aws
import jsonschema
import pytest
import yaml
from conftest import ROOT, render_template, run
from deploy_checks import derived_from, installed

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py, the single source of derived values

pytestmark = pytest.mark.xdist_group("beanstalk")

SCHEMAS = ROOT / "tests" / "schemas" / "elastic-beanstalk"
ENVIRONMENTS = ("staging", "production")
ROWS: list[dict[str, Any]] = [
    {
        "database": "postgresql",
        "server": "gunicorn",
        "platforms": ["aws_eb"],
        "redis": True,
        "worker": "celery",
        "domain": "api.example.com",
    },
    {
        "database": "none",
        "server": "uvicorn",
        "platforms": ["aws_eb", "aws_ecs"],
        "cors_origins": "https://app.example.com",
        "project_slug": "orders-api-for-the-warehouse-team-europe",
        "aws_region": "eu-west-2",
    },
    {"database": "mysql", "server": "uvicorn", "platforms": ["aws_eb"], "redis": True, "worker": "arq", "sentry": True},
]
IDS = ["postgresql-celery", "nodb-long-slug", "mysql-arq"]
IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service@{fake_aws.DIGEST}"


@pytest.fixture(scope="module")
def projects(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("beanstalk")
    return {i: render_template(template_src, base / i, **row) for i, row in zip(IDS, ROWS, strict=True)}


# ---------------------------------------------------------------------------------------------
# The stack, resolved as CloudFormation resolves it
# ---------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """CloudFormation's short tags (!Ref, !Sub, ...) as {"Ref": ...}, {"Fn::Sub": ...}."""


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)
NO_VALUE = object()


def _stack(project: Path) -> dict[str, Any]:
    return yaml.load((project / "deploy/aws_eb/cloudformation.yaml").read_text(), Loader=_CfnLoader)


def _resolve(node: Any, stack: dict[str, Any], params: dict[str, Any]) -> Any:
    """Evaluate the intrinsic functions this template uses, for one set of parameters."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}

    def ref(name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in params or name in pseudo:
            return {**pseudo, **params}[name]
        if "Default" in stack["Parameters"].get(name, {}):  # a parameter the caller leaves at its default
            return stack["Parameters"][name]["Default"]
        assert name in stack["Resources"], f"!Ref to unknown {name}"
        return f"{name}-physical-id"

    def sub(text: str, extra: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key in extra:
                return str(extra[key])
            if "." in key:
                return f"{key.split('.')[0]}-{key.split('.')[1]}"
            return str(ref(key))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def condition(name: str) -> bool:
        return bool(_resolve(stack["Conditions"][name], stack, params))

    if isinstance(node, list):
        return [v for v in (_resolve(i, stack, params) for i in node) if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref":
            return ref(value)
        if key == "Fn::FindInMap":
            m, k1, k2 = (_resolve(v, stack, params) for v in value)
            return stack["Mappings"][m][k1][k2]
        if key == "Fn::Join":
            return value[0].join(str(v) for v in _resolve(value[1], stack, params))
        if key == "Fn::Sub":
            if isinstance(value, list):
                return sub(value[0], {k: _resolve(v, stack, params) for k, v in value[1].items()})
            return sub(value, {})
        if key == "Fn::GetAtt":
            return f"arn:aws:iam::123456789012:role/{value.split('.')[0]}"
        if key == "Fn::If":
            return _resolve(value[1] if condition(value[0]) else value[2], stack, params)
        if key == "Fn::Not":
            return not _resolve(value[0], stack, params)
        if key == "Fn::Equals":
            a, b = (_resolve(v, stack, params) for v in value)
            return a == b
    return {k: _resolve(v, stack, params) for k, v in node.items()}


def _params(env: str, certificate: bool, **optional: str) -> dict[str, Any]:
    return {
        **optional,
        "Environment": env,
        "SolutionStackName": "64bit Amazon Linux 2023 v4.5.0 running Docker",
        "VpcId": "vpc-0a1b2c3d",
        "PublicSubnetIds": ["subnet-0a", "subnet-0b"],
        "InstanceSubnetIds": ["subnet-0c", "subnet-0d"],
        "AssociatePublicIpAddress": "false",
        "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc" if certificate else "",
        "RepositoryName": "my-service",
    }


def _settings(project: Path, env: str, certificate: bool = False, **optional: str) -> list[dict[str, Any]]:
    stack = _stack(project)
    environment = stack["Resources"]["BeanstalkEnvironment"]["Properties"]
    resolved: list[dict[str, Any]] = _resolve(
        environment["OptionSettings"], stack, _params(env, certificate, **optional)
    )
    return resolved


def _options(settings: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for s in settings:
        key = (s["Namespace"], s["OptionName"])
        assert key not in found, f"{key} is set twice"
        found[key] = s["Value"]
    return found


def _numeric_range(validator: Any, bound: int, instance: Any, schema: dict[str, Any]) -> Any:
    if not isinstance(instance, str) or not re.fullmatch(r"-?[0-9]+", instance):
        return
    low = schema.get("x-minimum", bound) if "x-minimum" in schema else None
    high = schema.get("x-maximum")
    if low is not None and int(instance) < low:
        yield jsonschema.ValidationError(f"{instance} is below the documented minimum {low}")
    if high is not None and int(instance) > high:
        yield jsonschema.ValidationError(f"{instance} is above the documented maximum {high}")


def _validator(name: str) -> Any:
    schema = json.loads((SCHEMAS / name).read_text())
    registry_schemas = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (f"elastic-beanstalk/{n}", Resource.from_contents(s)) for n, s in registry_schemas.items()
    )
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-minimum": _numeric_range})
    return cls(schema, registry=registry)


def _errors(name: str, data: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in _validator(name).iter_errors(data)]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_option_settings_pass_the_schema_and_say_what_derive_says(
    row: dict[str, Any], projects: dict[str, Path]
) -> None:
    project = projects[IDS[ROWS.index(row)]]
    d = derived_from(row)
    for env in ENVIRONMENTS:
        for certificate in (False, True):
            settings = _settings(project, env, certificate)
            assert _errors("option-settings.schema.json", settings) == [], (env, certificate)
            o = _options(settings)
            assert (
                ("aws:elbv2:listener:443", "Protocol") in o
                if certificate
                else not any(ns == "aws:elbv2:listener:443" for ns, _ in o)
            )
        size = d["environments"][env]
        assert o["aws:elasticbeanstalk:environment", "EnvironmentType"] == "LoadBalanced"
        assert o["aws:elasticbeanstalk:environment", "LoadBalancerType"] == "application"
        assert o["aws:ec2:instances", "InstanceTypes"] == size["eb_instance_type"]
        assert (int(o["aws:autoscaling:asg", "MinSize"]), int(o["aws:autoscaling:asg", "MaxSize"])) == (
            size["min_replicas"],
            size["max_replicas"],
        )
        assert o["aws:autoscaling:trigger", "UpperThreshold"] == str(d["autoscale_cpu_percent"])
        process = "aws:elasticbeanstalk:environment:process:default"
        assert o[process, "HealthCheckPath"] == d["health_ready_path"], "rotation follows readiness"
        assert o[process, "Port"] == "80", "the host port docker-compose.yml maps to the app"
        assert o[process, "DeregistrationDelay"] == str(d["graceful_timeout"])
        assert o["aws:elasticbeanstalk:command", "DeploymentPolicy"] == "Immutable"
        assert o["aws:autoscaling:updatepolicy:rollingupdate", "RollingUpdateType"] == "Immutable"
        assert o["aws:elasticbeanstalk:healthreporting:system", "SystemType"] == "enhanced"
        assert o["aws:elasticbeanstalk:cloudwatch:logs", "StreamLogs"] == "true"
        assert o["aws:autoscaling:launchconfiguration", "DisableIMDSv1"] == "true"
        plain = {n: v for (ns, n), v in o.items() if ns == "aws:elasticbeanstalk:application:environment"}
        assert plain["ENVIRONMENT"] == env
        assert plain["PORT"] == str(d["app_port"]) and plain["GRACEFUL_TIMEOUT"] == str(d["graceful_timeout"])
        assert ("WEB_CONCURRENCY" in plain) == (row["server"] == "gunicorn")
        assert plain.get("CORS_ORIGINS", "") == row.get("cors_origins", "")
        secrets = {n: v for (ns, n), v in o.items() if ns == "aws:elasticbeanstalk:application:environmentsecrets"}
        # Issue 13.5: an optional secret (SENTRY_DSN) is referenced only once its SSM parameter
        # exists (the stack parameter says so); by default the environment runs without it.
        optional = d["optional_secret_env_names"]
        assert list(secrets) == [n for n in d["secret_env_names"] if n not in optional]
        stack_parameters = _stack(project)["Parameters"]
        assert set(d["eb_optional_secrets"]) == set(optional)
        present = {stack["parameter"]: "true" for stack in d["eb_optional_secrets"].values()}
        for parameter in present:
            assert stack_parameters[parameter]["Default"] == "false"
        settings_with_optional = _settings(project, env, **present)
        with_optional = _options(settings_with_optional)
        assert [n for (ns, n) in with_optional if ns.endswith("environmentsecrets")] == d["secret_env_names"]
        if optional:
            assert _errors("option-settings.schema.json", settings_with_optional) == []
        secrets = {n: v for (ns, n), v in with_optional.items() if ns.endswith("environmentsecrets")}
        assert not set(secrets) & set(plain), "a secret is also a plain property"
        for name, arn in secrets.items():
            assert arn == f"arn:aws:ssm:us-east-1:123456789012:parameter/{d['image_name']}/{env}/{name}"
        assert len(_stack(project)["Mappings"]["EnvironmentConfig"][env]["EnvironmentName"]) <= 40


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("aws:elasticbeanstalk:command", "DeploymentPolicy", "Rollingly"), "is not one of"),
        (
            ("aws:elasticbeanstalk:environment:process:default", "HealthCheckInterval", "1"),
            "below the documented minimum",
        ),
        (("aws:elasticbeanstalk:environment:process:default", "HealthCheckPth", "/health/ready"), "is not one of"),
        (("aws:elasticbeanstalk:healthreporting:sytem", "SystemType", "enhanced"), "Namespace"),
        (("aws:elasticbeanstalk:application:environmentsecrets", "SECRET_KEY", "my-secret-value"), "does not match"),
        (("aws:autoscaling:asg", "MaxSize", "20000"), "above the documented maximum"),
    ],
)
def test_the_schema_refuses_what_aws_documents_as_invalid(
    change: tuple[str, str, str], expected: str, projects: dict[str, Path]
) -> None:
    settings = _settings(projects[IDS[0]], "production")
    assert _errors("option-settings.schema.json", settings) == []
    broken = [*copy.deepcopy(settings), dict(zip(("Namespace", "OptionName", "Value"), change, strict=True))]
    errors = _errors("option-settings.schema.json", broken)
    assert errors and any(expected in e or expected in str(e) for e in errors), errors


def test_roles_grant_only_what_the_instances_and_the_service_need(projects: dict[str, Path]) -> None:
    for row, name in zip(ROWS, IDS, strict=True):
        d = derived_from(row)
        resources = _resolve(_stack(projects[name])["Resources"], _stack(projects[name]), _params("staging", False))
        instance = resources["InstanceRole"]["Properties"]
        assert "ManagedPolicyArns" not in instance, "no broad managed policy on the instances"
        (trust,) = instance["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
        statements = [s for p in instance["Policies"] for s in p["PolicyDocument"]["Statement"]]
        wildcard = [s["Action"] for s in statements if s["Resource"] == "*"]
        assert wildcard == ["ecr:GetAuthorizationToken"], "only the action without resource-level permissions"
        actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert not [a for a in actions if a.endswith(":*") or a == "*"], actions
        pull = next(s for s in statements if "ecr:BatchGetImage" in s["Action"])
        assert pull["Resource"] == "arn:aws:ecr:us-east-1:123456789012:repository/my-service"
        read = next(s for s in statements if "ssm:GetParameters" in s["Action"])
        assert [r.rsplit("/", 1)[1] for r in read["Resource"]] == d["secret_env_names"]
        assert all(f":parameter/{d['image_name']}/staging/" in r for r in read["Resource"])
        service = resources["ServiceRole"]["Properties"]
        (trust,) = service["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "elasticbeanstalk.amazonaws.com"}
        assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": "elasticbeanstalk"}}
        assert sorted(a.rsplit("/", 1)[1] for a in service["ManagedPolicyArns"]) == [
            "AWSElasticBeanstalkEnhancedHealth",
            "AWSElasticBeanstalkManagedUpdatesCustomerRolePolicy",
        ]


def test_cfn_lint_passes_every_rendered_stack(projects: dict[str, Path], tmp_path: Path) -> None:
    stacks = [projects[i] / "deploy/aws_eb/cloudformation.yaml" for i in IDS]
    broken = tmp_path / "broken.yaml"
    broken.write_text(stacks[0].read_text().replace("OptionSettings:", "OptionSetings:", 1))
    result = run([installed("cfn-lint"), *map(str, stacks), str(broken)], check=False, timeout=300)
    report = result.stdout + result.stderr
    assert str(broken) in report and "OptionSetings" in report, report
    assert [str(s) for s in stacks if str(s) in report] == [], f"cfn-lint found problems:\n{report}"


# ---------------------------------------------------------------------------------------------
# The application version's files
# ---------------------------------------------------------------------------------------------
def _bundle(project: Path, env: str, dest: Path, image: str = IMAGE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project / "deploy/aws_eb/deploy.sh"), "--bundle", env, str(dest)],
        env={**os.environ, "IMAGE": image},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _compose_model(bundle: Path, settings: list[dict[str, Any]]) -> dict[str, Any]:
    """docker-compose.yml as Compose reads it, with the .env Elastic Beanstalk writes beside it."""
    env_lines = [
        f"{s['OptionName']}={s['Value'] if 'secrets' not in s['Namespace'] else 'my_service_staging_your_key_here'}"
        for s in settings
        if s["Namespace"].startswith("aws:elasticbeanstalk:application:environment")
    ]
    (bundle / ".env").write_text("\n".join(env_lines) + "\n")
    result = run(
        [installed("docker-compose"), "-f", str(bundle / "docker-compose.yml"), "config", "--format", "json"],
        cwd=bundle,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_bundle_runs_the_pinned_image_as_derive_says(
    row: dict[str, Any], projects: dict[str, Path], tmp_path: Path
) -> None:
    project = projects[IDS[ROWS.index(row)]]
    d = derived_from(row)
    bundle = tmp_path / "bundle"
    result = _bundle(project, "staging", bundle)
    assert result.returncode == 0, result.stderr
    # Every secret's parameter exists here, the optional ones too (their stack parameters say so).
    present = {stack["parameter"]: "true" for stack in d["eb_optional_secrets"].values()}
    model = _compose_model(bundle, _settings(project, "staging", **present))
    services = model["services"]
    assert set(services) == ({"web", "worker"} if d["has_worker"] else {"web"})
    for name, service in services.items():
        assert service["image"] == IMAGE, "the image CI pushed, by digest"
        assert service["user"] == f"{d['app_uid']}:{d['app_uid']}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["stop_grace_period"] == f"{d['kill_timeout']}s"
        assert service["environment"]["PORT"] == str(d["app_port"])
        assert set(d["secret_env_names"]) <= set(service["environment"]), "secrets reach the containers"
        logging = service["logging"]
        assert logging["driver"] == "awslogs" and logging["options"]["mode"] == "non-blocking"
        assert logging["options"]["awslogs-group"] == f"/eb/{d['image_name']}/staging"
        assert logging["options"]["awslogs-region"] == row.get("aws_region", "us-east-1")
        if name == "worker":
            assert service["command"] == d["worker_argv"] and "ports" not in service
            assert service["healthcheck"]["disable"] is True
    (port,) = services["web"]["ports"]
    assert (port["published"], port["target"]) == ("80", d["app_port"])
    assert services["web"].get("command") is None, "the image's CMD starts the server"
    migration = bundle / ".ebextensions/migrations.config"
    assert migration.exists() == d["has_db"]
    if d["has_db"]:
        config = yaml.safe_load(migration.read_text())
        assert _errors("ebextensions-config.schema.json", config) == []
        (command,) = config["container_commands"].values()
        assert command["leader_only"] is True and "env" not in command, "env would replace the variables"
        text = command["command"]
        assert f"image='{IMAGE}'" in text and text.endswith(f'"$image" {d["migration_command"]}')
        for name in d["secret_env_names"]:
            assert f"--env {name} " in text
        assert f"--user {d['app_uid']}:{d['app_uid']}" in text and "--read-only" in text


def test_the_bundle_refuses_an_image_that_is_not_pinned(projects: dict[str, Path], tmp_path: Path) -> None:
    for image in ("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service:latest", "my-service@sha256:abc"):
        result = _bundle(projects[IDS[0]], "production", tmp_path / "b", image)
        assert result.returncode == 1 and "not an ECR image by digest" in result.stderr
    broken = copy.deepcopy(
        yaml.safe_load((projects[IDS[0]] / "deploy/aws_eb/.ebextensions/migrations.config").read_text())
    )
    broken["container_commands"]["01_migrate"]["leaderOnly"] = True
    assert _errors("ebextensions-config.schema.json", broken) != []


# ---------------------------------------------------------------------------------------------
# deploy.sh against the recording aws CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eb_project(projects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed copy of the project with a database and a worker (deploy.sh tags by commit)."""
    dest = tmp_path_factory.mktemp("eb") / "my-service"
    shutil.copytree(projects[IDS[0]], dest)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-q", "-m", "init"]):
        run(cmd, cwd=dest, env=dict(os.environ))
    return dest


def _deploy(
    project: Path, tmp: Path, image_ref: str | None = None, **scenario: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """deploy/aws_eb/deploy.sh staging against tests/fake_aws.py; IMAGE_REF when image_ref is given."""
    d = derived_from(ROWS[0])
    state = {
        "outputs": {
            "ApplicationName": "my-service-staging",
            "EnvironmentName": d["eb_environment_names"]["staging"],
            "EnvironmentUrl": "http://awseb-e-1.us-east-1.elb.amazonaws.com",
        },
        "parameters": {"RepositoryName": "my-service", "Environment": "staging"},
        **scenario,
    }
    state_file = tmp / "state.json"
    env = {**os.environ, **fake_aws.install(tmp / "bin", state, state_file), "POLL_SECONDS": "0"}
    env.pop("IMAGE_REF", None)
    if image_ref is not None:
        env["IMAGE_REF"] = image_ref
    result = subprocess.run(
        [str(project / "deploy/aws_eb/deploy.sh"), "staging"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, json.loads(state_file.read_text())


def _called(state: dict[str, Any], *prefix: str) -> list[list[str]]:
    return [c for c in state["calls"] if [a for a in c if a][: len(prefix)] == list(prefix)]


def _arg(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


CI_IMAGE = f"ghcr.io/acme/my-service@{fake_aws.DIGEST}"
ECR_IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service@{fake_aws.DIGEST}"


def _label(project: Path, tmp: Path) -> str:
    """The version label the documented rule gives: 12 hex digits of the image digest, then 12 of
    the sha256 of the bundle's `sha256sum` listing (its files by path, in C order)."""
    bundle = tmp / "expected-bundle"
    assert _bundle(project, "staging", bundle, ECR_IMAGE).returncode == 0
    files = sorted(f"./{f.relative_to(bundle)}" for f in bundle.rglob("*") if f.is_file())
    listing = "".join(f"{hashlib.sha256((bundle / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    return f"{fake_aws.DIGEST[7:19]}-{hashlib.sha256(listing.encode()).hexdigest()[:12]}"


def test_deploy_promotes_the_ci_image_to_ecr_by_digest(eb_project: Path, tmp_path: Path) -> None:
    """IMAGE_REF: CI's image is copied to ECR with its digest (nothing built) and the version's
    compose file and migration name that digest in ECR."""
    result, state = _deploy(eb_project, tmp_path, image_ref=CI_IMAGE)
    assert result.returncode == 0, result.stderr
    assert state.get("refused", []) == [], "every call passed botocore's model"
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service"
    copy = ["buildx", "imagetools", "create", "--prefer-index=false", "--tag", f"{ecr}:sha256-{'ab' * 32}", CI_IMAGE]
    assert copy in state["engine"] and not [c for c in state["engine"] if c[:1] in (["build"], ["push"])]
    label = _label(eb_project, tmp_path)
    (create,) = _called(state, "elasticbeanstalk", "create-application-version")
    assert _arg(create, "--version-label") == label and _arg(create, "--description") == ECR_IMAGE
    bucket, key = re.fullmatch(r"S3Bucket=(.+),S3Key=(.+)", _arg(create, "--source-bundle")).groups()
    with zipfile.ZipFile(Path(state["uploads"]) / bucket / key) as bundle:
        compose = yaml.safe_load(bundle.read("docker-compose.yml"))
    assert {s["image"] for s in compose["services"].values()} == {ECR_IMAGE}
    (update,) = _called(state, "elasticbeanstalk", "update-environment")
    assert _arg(update, "--version-label") == label


def test_deploy_of_an_unchanged_digest_deploys_nothing(eb_project: Path, tmp_path: Path) -> None:
    """The environment runs the version of this digest and these files already: no copy, no new
    version, no update-environment (which would redeploy the same version to every instance)."""
    label = _label(eb_project, tmp_path)
    versions = {label: {"ApplicationName": "my-service-staging", "VersionLabel": label, "Status": "PROCESSED"}}
    environment = {"Status": "Ready", "Health": "Green", "VersionLabel": label}
    result, state = _deploy(
        eb_project,
        tmp_path,
        image_ref=CI_IMAGE,
        ecr_digests=[fake_aws.DIGEST],
        versions=versions,
        environment=environment,
    )
    assert result.returncode == 0, result.stderr
    # Only reads: the look-up of cosign's signatures beside the image (none here).
    writes = [c for c in state.get("engine", []) if c[:3] != ["buildx", "imagetools", "inspect"]]
    assert writes == [], "nothing copied or built"
    assert "nothing to deploy" in result.stdout
    for call in (("elasticbeanstalk", "create-application-version"), ("elasticbeanstalk", "update-environment")):
        assert _called(state, *call) == [], call
    assert _called(state, "s3api", "put-object") == []


@pytest.mark.parametrize("image_ref", ["ghcr.io/acme/my-service:main", "ghcr.io/acme/my-service", ""])
def test_deploy_refuses_an_image_ref_that_is_not_a_digest(eb_project: Path, tmp_path: Path, image_ref: str) -> None:
    result, state = _deploy(eb_project, tmp_path, image_ref=image_ref)
    assert result.returncode == 2, result.stderr
    assert "IMAGE_REF" in result.stderr and "@sha256:" in result.stderr and f"'{image_ref}'" in result.stderr
    assert state["calls"] == [], "refused before any AWS call"


def test_deploy_stops_when_the_copy_changes_the_digest(eb_project: Path, tmp_path: Path) -> None:
    result, state = _deploy(eb_project, tmp_path, image_ref=CI_IMAGE, copy_changes_digest=True)
    assert result.returncode == 1 and "nothing was deployed" in result.stderr, result.stderr
    assert _called(state, "elasticbeanstalk", "create-application-version") == []


@pytest.mark.parametrize(("failures", "deployed"), [(2, True), (3, False)], ids=["refused-twice", "refused-thrice"])
def test_a_refused_copy_is_tried_three_times(eb_project: Path, tmp_path: Path, failures: int, deployed: bool) -> None:
    """A registry that refuses the copy (buildx against Distribution 2.8 does, now and then:
    tests/test_ecr_copy.py) gets two more attempts; after the third the deploy stops."""
    result, state = _deploy(eb_project, tmp_path, image_ref=CI_IMAGE, copy_failures=failures)
    copies = [c for c in state["engine"] if c[:3] == ["buildx", "imagetools", "create"]]
    assert len(copies) == 3 and result.stderr.count("trying again") == 2, result.stderr
    if deployed:
        assert result.returncode == 0, result.stderr
        assert len(_called(state, "elasticbeanstalk", "create-application-version")) == 1
    else:
        assert result.returncode == 1 and "could not copy" in result.stderr, result.stderr
        assert _called(state, "elasticbeanstalk", "create-application-version") == []


def test_deploy_pushes_pins_versions_and_waits_for_green(eb_project: Path, tmp_path: Path) -> None:
    d = derived_from(ROWS[0])
    result, state = _deploy(eb_project, tmp_path, image_exists=False)
    assert result.returncode == 0, result.stderr
    assert state.get("refused", []) == [], "every call passed botocore's model"
    commit = run(["git", "rev-parse", "--short=12", "HEAD"], cwd=eb_project, env=dict(os.environ)).stdout.strip()
    tagged = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service:{commit}"
    assert ["push", tagged] in state["engine"] and any(
        c[:3] == ["build", "--platform", "linux/amd64"] for c in state["engine"]
    )
    (create,) = _called(state, "elasticbeanstalk", "create-application-version")
    label = _label(eb_project, tmp_path)
    assert "--process" in create and _arg(create, "--version-label") == label
    bucket, key = re.fullmatch(r"S3Bucket=(.+),S3Key=(.+)", _arg(create, "--source-bundle")).groups()
    with zipfile.ZipFile(Path(state["uploads"]) / bucket / key) as bundle:
        names = set(bundle.namelist())
        compose = yaml.safe_load(bundle.read("docker-compose.yml"))
        migration = bundle.read(".ebextensions/migrations.config").decode()
    assert {"docker-compose.yml", ".ebextensions/migrations.config"} <= names, "files at the zip's root"
    pinned = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/my-service@{fake_aws.DIGEST}"
    assert {s["image"] for s in compose["services"].values()} == {pinned}
    assert f"image='{pinned}'" in migration
    (update,) = _called(state, "elasticbeanstalk", "update-environment")
    assert _arg(update, "--version-label") == label
    assert _arg(update, "--environment-name") == d["eb_environment_names"]["staging"]
    order = [" ".join(c[:2]) for c in state["calls"]]
    assert order.index("elasticbeanstalk create-application-version") < order.index(
        "elasticbeanstalk update-environment"
    )
    assert "Deployed" in result.stdout and "awseb-e-1" in result.stdout


def test_deploy_reuses_the_image_and_the_version_of_a_commit(eb_project: Path, tmp_path: Path) -> None:
    label = _label(eb_project, tmp_path)
    versions = {label: {"ApplicationName": "my-service-staging", "VersionLabel": label, "Status": "PROCESSED"}}
    result, state = _deploy(eb_project, tmp_path, image_exists=True, versions=versions)
    assert result.returncode == 0, result.stderr
    assert "engine" not in state, "an image already in ECR is not rebuilt"
    assert _called(state, "elasticbeanstalk", "create-application-version") == []
    assert _called(state, "s3api", "put-object") == []
    assert len(_called(state, "elasticbeanstalk", "update-environment")) == 1


@pytest.mark.parametrize(
    ("outcome", "message"),
    [("rolled_back", "running version old"), ("red", "health Red")],
)
def test_deploy_fails_with_the_events_when_the_new_version_does_not_take(
    outcome: str, message: str, eb_project: Path, tmp_path: Path
) -> None:
    events = ["Failed to deploy application.", "Command 01_migrate (leader) failed."]
    result, state = _deploy(eb_project, tmp_path, image_exists=True, deploy_outcome=outcome, events=events)
    assert result.returncode == 1
    assert message in result.stderr and "Command 01_migrate (leader) failed." in result.stderr
    (events_call,) = _called(state, "elasticbeanstalk", "describe-events")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", _arg(events_call, "--start-time"))
    assert state.get("refused", []) == []


def test_deploy_stops_before_the_environment_when_the_version_is_invalid(eb_project: Path, tmp_path: Path) -> None:
    result, state = _deploy(eb_project, tmp_path, image_exists=True, version_outcome="FAILED")
    assert result.returncode == 1 and "failed validation" in result.stderr
    assert _called(state, "elasticbeanstalk", "update-environment") == []


def test_deploy_needs_the_stack(eb_project: Path, tmp_path: Path) -> None:
    result, state = _deploy(eb_project, tmp_path, stack_exists=False)
    assert result.returncode == 1 and "create it from deploy/aws_eb/cloudformation.yaml" in result.stderr
    assert _called(state, "elasticbeanstalk") == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["elasticbeanstalk", "update-environment", "--environment-nam", "e", "--version-label", "v"],
            "Unknown options",
        ),
        (["elasticbeanstalk", "create-application-version", "--version-label", "v"], "ApplicationName"),
        (["elasticbeanstalk", "describe-events", "--severity", "LOUD"], "is not one of"),
        (["elasticbeanstalk", "wait-for-green"], "Invalid choice"),
        (["ecr", "describe-images", "--repository-name", "r", "--image-ids", "tag=x"], "unknown key 'tag'"),
        (
            ["elasticbeanstalk", "describe-environments", "--query", "Environments[0].[", "--output", "text"],
            "Bad value for --query",
        ),
    ],
)
def test_the_fake_cli_refuses_what_the_real_one_would(args: list[str], reason: str, tmp_path: Path) -> None:
    env = {**os.environ, **fake_aws.install(tmp_path / "bin", {}, tmp_path / "state.json")}
    result = subprocess.run(["aws", *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode in (252, 255, 1) and result.returncode != 0
    assert reason in result.stderr, result.stderr


def test_scripts_deploy_dispatches_to_the_beanstalk_script(projects: dict[str, Path]) -> None:
    script = projects[IDS[1]] / "scripts/deploy.sh"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert "aws_eb" in result.stdout and "deploy/aws_eb/deploy.sh" in result.stdout
    result = subprocess.run([str(script), "aws_eb", "qa"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    own = projects[IDS[1]] / "deploy/aws_eb/deploy.sh"
    for args in (["qa"], ["staging", "extra"], ["--bundle", "staging"]):
        result = subprocess.run([str(own), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "Usage:" in result.stderr, args


def test_docs_page_covers_the_platform(projects: dict[str, Path]) -> None:
    for row, name in zip(ROWS, IDS, strict=True):
        page = projects[name] / "docs/deploy/elastic-beanstalk.md"
        text = page.read_text()
        for heading in ("## Why these choices", "## Create first", "## Deploy", "## Roll back", "## Scale", "## Costs"):
            assert heading in text, heading
        assert "## What is tested, and what is not" in text
        for secret in derived_from(row)["secret_env_names"]:
            assert secret in text
        assert ("leader_only" in text) == (row["database"] != "none")
        assert "docs/deploy/elastic-beanstalk.md" in context.PLATFORM_NEXT_STEPS["aws_eb"]


def test_a_wrong_argument_in_deploy_sh_stops_the_deploy(eb_project: Path, tmp_path: Path) -> None:
    """The fake refuses what the CLI would: a misspelled option in the script itself fails it."""
    script = eb_project / "deploy/aws_eb/deploy.sh"
    original = script.read_text()
    assert original.count("--version-labels") >= 2
    try:
        script.write_text(original.replace("--version-labels", "--version-label", 1))
        result, state = _deploy(eb_project, tmp_path, image_exists=True)
    finally:
        script.write_text(original)
    assert result.returncode == 252 and "Unknown options: --version-label" in result.stderr
    assert [r["call"][:2] for r in state["refused"]] == [["elasticbeanstalk", "describe-application-versions"]]
    assert _called(state, "elasticbeanstalk", "update-environment") == []
