"""deploy/aws/deploy.sh end to end against moto, an AWS API emulator, with the real AWS CLI (v1).

No AWS account is reachable from the test machines. moto's server (in this process, on
127.0.0.1) answers the CLI's real HTTP calls, so the CloudFormation template is created as a
stack, the script's --query expressions run on real responses, and the stack update that creates
the services, the ECR repository, the task definitions, the migration task and the service
updates all happen in the emulator. What moto cannot do is patched in tests/moto_shims.py (one
comment per shim). The container engine is a recorder whose `push` puts the image manifest into
ECR through the API (there is no registry). Failure paths (a migration exiting non-zero, a
rollback) stay on the recording CLI in test_platforms.py: moto reports every task as exit 0.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import ROOT, render_template, run

sys.path.insert(0, str(ROOT / "extensions"))
import context  # extensions/context.py, the single source of derived values

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ANSWERS: dict[str, Any] = {
    "database": "postgresql",
    "server": "gunicorn",
    "platforms": ["aws_ecs"],
    "redis": True,
    "worker": "celery",
    "sentry": True,
}
# The container engine: records its calls; `push` stores a manifest in ECR as a real push would.
ENGINE = r"""#!PYTHON
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["ENGINE_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if args[:1] == ["login"]:
    sys.stdin.read()
if args[:1] == ["push"]:
    repository, tag = args[1].split("/", 1)[1].rsplit(":", 1)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                           "digest": "sha256:" + "0" * 64}, "layers": []}
    subprocess.run(["aws", "ecr", "put-image", "--repository-name", repository, "--image-tag", tag,
                    "--image-manifest", json.dumps(manifest)], check=True, stdout=subprocess.DEVNULL)
"""


@pytest.fixture(scope="module")
def ready_server() -> Iterator[str]:
    """The load balancer's stand-in: 200 on the ready path, 404 elsewhere."""
    ready_path = context.derive({"project_slug": "my-service", "package_name": "my_service", **ANSWERS})[
        "health_ready_path"
    ]

    class Balancer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == ready_path else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Balancer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def moto_env(ready_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import moto_shims
    from moto.server import ThreadedMotoServer

    uninstall = moto_shims.install(ready_server)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    bin_dir = tmp_path_factory.mktemp("moto-bin")
    (bin_dir / "docker").write_text(ENGINE.replace("PYTHON", sys.executable, 1))
    (bin_dir / "docker").chmod(0o755)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(bin_dir), str(BIN), os.environ["PATH"]]),
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "ENGINE_LOG": str(bin_dir / "engine.log"),
        "READY_DEADLINE": "5",
    }
    try:
        yield env
    finally:
        server.stop()
        uninstall()


def aws(env: dict[str, str], service: str) -> Any:
    """A boto3 client on moto for the test's own set-up and checks (the script uses the CLI:
    each CLI call costs about a second of start-up, boto3 in this process does not)."""
    keys = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", **keys)


def _network(env: dict[str, str]) -> tuple[str, list[str]]:
    """A VPC with DNS hostnames (ECS run-task needs them) and subnets in two zones."""
    ec2 = aws(env, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate("ab")
    ]
    return vpc, subnets


def _deploy(project: Path, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(project / "deploy/aws/deploy.sh"), "staging"],
        cwd=project,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _service(env: dict[str, str], cluster: str, name: str) -> dict[str, Any]:
    (service,) = aws(env, "ecs").describe_services(cluster=cluster, services=[name])["services"]
    return service


def test_aws_deploy_runs_end_to_end_against_moto(template_src: Path, tmp_path: Path, moto_env: dict[str, str]) -> None:
    env = moto_env
    d = context.derive({"project_slug": "my-service", "package_name": "my_service", **ANSWERS})
    project = render_template(template_src, tmp_path / "my-service", **ANSWERS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    run(["git", "init", "-q"], cwd=project, env=dict(os.environ))
    run(["git", "add", "-A"], cwd=project, env=dict(os.environ))
    run([*git, "commit", "-q", "-m", "init"], cwd=project, env=dict(os.environ))
    commit = run(["git", "rev-parse", "--short=12", "HEAD"], cwd=project, env=dict(os.environ)).stdout.strip()

    # The stack, from the generated template, with every parameter given (update-stack's
    # UsePreviousValue then has a value for each).
    vpc, subnets = _network(env)
    parameters = {
        "Environment": "staging",
        "VpcId": vpc,
        "PublicSubnetIds": ",".join(subnets),
        "TaskSubnetIds": ",".join(subnets),
        "AssignPublicIp": "DISABLED",
        "CertificateArn": "",
        "RepositoryName": d["image_name"],
        "TaskDefinitionArn": "",
        "WorkerTaskDefinitionArn": "",
    }
    body = (project / "deploy/aws/cloudformation.yaml").read_text()
    aws(env, "cloudformation").create_stack(
        StackName="my-service-staging",
        TemplateBody=body,
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    dsn = "https://key@sentry.example.com/1"
    aws(env, "ssm").put_parameter(Name="/my-service/staging/SENTRY_DSN", Type="SecureString", Value=dsn)

    # First deploy: builds and pushes the commit, registers, migrates, creates the services.
    first = _deploy(project, env)
    assert first.returncode == 0, first.stdout + first.stderr
    registry = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{d['image_name']}"
    engine = Path(env["ENGINE_LOG"]).read_text()
    assert f"push {registry}:{commit}" in engine and "build --platform linux/amd64" in engine
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in aws(env, "cloudformation").describe_stacks(StackName="my-service-staging")["Stacks"][0]["Outputs"]
    }
    cluster = outputs["ClusterName"]
    web, worker = _service(env, cluster, outputs["ServiceName"]), _service(env, cluster, outputs["WorkerServiceName"])
    for service, family in ((web, "my-service-staging"), (worker, "my-service-staging-worker")):
        task = aws(env, "ecs").describe_task_definition(taskDefinition=service["taskDefinition"])
        assert task["taskDefinition"]["containerDefinitions"][0]["image"] == f"{registry}:{commit}"
        assert service["taskDefinition"].split("/")[-1].rsplit(":", 1)[0] == family, service["taskDefinition"]
    (migration,) = aws(env, "ecs").list_tasks(cluster=cluster, startedBy="deploy-migrations")["taskArns"]
    (task,) = aws(env, "ecs").describe_tasks(cluster=cluster, tasks=[migration])["tasks"]
    assert task["overrides"]["containerOverrides"][0]["command"] == d["migration_argv"]
    assert task["taskDefinitionArn"] == web["taskDefinition"]
    assert "Migrations done." in first.stdout and f"Deployed {registry}:{commit} to staging" in first.stdout

    # A new tag: pushed, registered as a new revision, and the existing services updated.
    second = _deploy(project, env, IMAGE_TAG="release-2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"push {registry}:release-2" in Path(env["ENGINE_LOG"]).read_text()
    web2 = _service(env, cluster, outputs["ServiceName"])
    assert web2["taskDefinition"] != web["taskDefinition"]
    task = aws(env, "ecs").describe_task_definition(taskDefinition=web2["taskDefinition"])
    assert task["taskDefinition"]["containerDefinitions"][0]["image"] == f"{registry}:release-2"
    assert "Creating the service" not in second.stdout

    # The same image again: found in ECR, not rebuilt or pushed, still deployed.
    pushes = Path(env["ENGINE_LOG"]).read_text().count("\npush ")
    third = _deploy(project, env, IMAGE_TAG="release-2")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "already in ECR: not rebuilding" in third.stdout
    assert Path(env["ENGINE_LOG"]).read_text().count("\npush ") == pushes
    web3 = _service(env, cluster, outputs["ServiceName"])
    assert web3["taskDefinition"] != web2["taskDefinition"]
    images = aws(env, "ecr").describe_images(repositoryName=d["image_name"])["imageDetails"]
    assert sorted(t for i in images for t in i.get("imageTags", [])) == sorted([commit, "release-2"])
