"""deploy/aws/deploy.sh end to end against moto, an AWS API emulator, with the real AWS CLI (v1).

No AWS account is reachable from the test machines. moto's server (in this process, on
127.0.0.1) answers the CLI's real HTTP calls, so the CloudFormation template is created as a
stack, the script's --query expressions run on real responses, and the stack update that creates
the services, the ECR repository, the task definitions, the migration task and the service
updates all happen in the emulator. What moto cannot do is patched in tests/moto_shims.py (one
comment per shim). moto has no registry (no Docker Registry HTTP API), so the container engine is
a recorder: `push` puts an image manifest into ECR through the API, and `buildx imagetools create`
(the promotion of CI's image) puts the source's manifest, read from a stand-in for GHCR (a folder
of manifests named by their sha256), with that digest, as the carbon copy does. Failure paths (a
migration exiting non-zero, a rollback) stay on the recording CLI in test_platforms.py: moto
reports every task as exit 0.
"""

from __future__ import annotations

import hashlib
import http.server
import json
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
if args[:3] == ["buildx", "imagetools", "inspect"]:  # GHCR holds no cosign signature beside the image
    print(f"ERROR: {args[-1]}: not found", file=sys.stderr)
    sys.exit(1)
if args[:3] == ["buildx", "imagetools", "create"]:
    repository, tag = args[-2].split("/", 1)[1].rsplit(":", 1)
    digest = args[-1].rsplit("@", 1)[1]
    with open(os.path.join(os.environ["GHCR"], digest), "rb") as source:
        manifest = source.read().decode()
    subprocess.run(["aws", "ecr", "put-image", "--repository-name", repository, "--image-tag", tag,
                    "--image-manifest", manifest, "--image-digest", digest], check=True, stdout=subprocess.DEVNULL)
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
        "GHCR": str(bin_dir),
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


def _ghcr_image(env: dict[str, str]) -> str:
    """CI's image in the GHCR stand-in: an OCI index whose digest is the sha256 of its bytes."""
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 1234,
                "digest": "sha256:" + "5" * 64,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    body = json.dumps(index, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    (Path(env["GHCR"]) / digest).write_bytes(body)
    return f"ghcr.io/acme/my-service@{digest}"


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

    ecs, ecr = aws(env, "ecs"), aws(env, "ecr")
    registry = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{d['image_name']}"

    # A tag is refused before any call: only a digest names one image for good.
    tagged = _deploy(project, env, IMAGE_REF="ghcr.io/acme/my-service:main")
    assert tagged.returncode == 2 and "IMAGE_REF" in tagged.stderr and "@sha256:" in tagged.stderr

    # First deploy, CI's image: copied to ECR by digest (nothing built), registered by that digest,
    # migrated, and the services created through the stack.
    ci_image = _ghcr_image(env)
    digest = ci_image.rsplit("@", 1)[1]
    first = _deploy(project, env, IMAGE_REF=ci_image)
    assert first.returncode == 0, first.stdout + first.stderr
    engine = Path(env["ENGINE_LOG"]).read_text().splitlines()
    assert [c for c in engine if "imagetools create" in c] == [
        f"buildx imagetools create --prefer-index=false --tag {registry}:sha256-{digest[7:]} {ci_image}"
    ]
    assert not [c for c in engine if c.startswith(("build ", "push "))], "nothing is rebuilt"
    (copied,) = ecr.describe_images(repositoryName=d["image_name"], imageIds=[{"imageDigest": digest}])["imageDetails"]
    assert copied["imageTags"] == [f"sha256-{digest[7:]}"]
    outputs = {
        o["OutputKey"]: o["OutputValue"]
        for o in aws(env, "cloudformation").describe_stacks(StackName="my-service-staging")["Stacks"][0]["Outputs"]
    }
    cluster = outputs["ClusterName"]
    web, worker = _service(env, cluster, outputs["ServiceName"]), _service(env, cluster, outputs["WorkerServiceName"])
    for service, family in ((web, "my-service-staging"), (worker, "my-service-staging-worker")):
        task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])
        assert task["taskDefinition"]["containerDefinitions"][0]["image"] == f"{registry}@{digest}"
        assert service["taskDefinition"].split("/")[-1].rsplit(":", 1)[0] == family, service["taskDefinition"]
    (migration,) = ecs.list_tasks(cluster=cluster, startedBy="deploy-migrations")["taskArns"]
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=[migration])["tasks"]
    assert task["overrides"]["containerOverrides"][0]["command"] == d["migration_argv"]
    assert task["taskDefinitionArn"] == web["taskDefinition"]
    assert "Migrations done." in first.stdout and f"Deployed {registry}@{digest} to staging" in first.stdout

    # The same digest again: nothing copied, registered, migrated or rolled out.
    revisions = ecs.list_task_definitions(familyPrefix="my-service-staging")["taskDefinitionArns"]
    second = _deploy(project, env, IMAGE_REF=ci_image)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already in ECR: not copying" in second.stdout
    assert Path(env["ENGINE_LOG"]).read_text().count("imagetools create") == 1
    assert ecs.list_task_definitions(familyPrefix="my-service-staging")["taskDefinitionArns"] == revisions
    assert len(ecs.list_tasks(cluster=cluster, startedBy="deploy-migrations")["taskArns"]) == 1
    assert _service(env, cluster, outputs["ServiceName"])["taskDefinition"] == web["taskDefinition"]
    assert second.stdout.count("nothing to roll out") == 2, second.stdout

    # A laptop (no IMAGE_REF): the commit built and pushed, deployed by the digest ECR stored.
    third = _deploy(project, env, IMAGE_TAG="release-2")
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"push {registry}:release-2" in Path(env["ENGINE_LOG"]).read_text()
    (pushed,) = ecr.describe_images(repositoryName=d["image_name"], imageIds=[{"imageTag": "release-2"}])[
        "imageDetails"
    ]
    web3 = _service(env, cluster, outputs["ServiceName"])
    assert web3["taskDefinition"] != web["taskDefinition"]
    task = ecs.describe_task_definition(taskDefinition=web3["taskDefinition"])
    assert task["taskDefinition"]["containerDefinitions"][0]["image"] == f"{registry}@{pushed['imageDigest']}"
    assert "Creating the service" not in third.stdout
    images = ecr.describe_images(repositoryName=d["image_name"])["imageDetails"]
    assert sorted(t for i in images for t in i.get("imageTags", [])) == sorted([f"sha256-{digest[7:]}", "release-2"])
