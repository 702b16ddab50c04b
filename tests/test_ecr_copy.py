"""The copy of CI's image into ECR, for real: the AWS deploy scripts' `docker buildx imagetools
create --prefer-index=false` between two real registries.

Two loopback registries (Debian's docker-registry, tests/test_container.py's local_registry): the
first stands in for GHCR and holds a real image pushed by the Docker engine for two platforms,
as CI pushes it: an OCI image index with both platform manifests and BuildKit's provenance
attestation manifest (platform unknown/unknown, `vnd.docker.reference.*` annotations; Docker 20.10
cannot make attestations, so that one is written over the registry API in the layout BuildKit
uses), and one of the platform manifests on its own. The second registry is "ECR": the stand-in
`aws` (tests/fake_aws.py, checked against botocore's models) names it as the repository's URI,
answers `ecr describe-images` by digest by asking it over HTTP for the manifest, and gives a
placeholder for `get-login-password`. The scripts run with the real Docker client (FD_DOCKER)
and a real buildx plugin (the client's own, else Debian testing's docker-buildx:
tests/containers.py's buildx_plugin()), and stop after their image step (NEXT_STEP).

Proved for deploy/aws/deploy.sh (ECS) and deploy/aws_eb/deploy.sh (Elastic Beanstalk): ECR ends
up with exactly the source's digest, the same bytes, children and blobs, and only the
sha256-<hex> tag; a second run with the same digest says "already in ECR", logs in to nothing and
writes nothing to the registry; a digest the source does not hold stops the deploy with the
script's "could not copy" and copies nothing; a copy that leaves the repository without the
digest stops it with the script's "ECR has no image"; without --prefer-index=false the tag of a
single manifest would name a new index. cosign's manifests beside the image (stand-ins of the
pinned versions' layout: GitLab's cosign 2 tags sha256-<hex>.sig and .att, GitHub's cosign 3 the
referrers fallback index sha256-<hex>) reach ECR by digest under the same tags (the index under
sha256-<hex>.referrers, since sha256-<hex> is the image's tag in ECR) with every manifest and blob,
and a second run copies none of them; an image without any deploys with one line saying so; a
signature that fails to copy, or that ECR's immutable tag holds at another digest, stops the
deploy with the script's message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fake_aws
import httpx
import pytest
from conftest import need, render_template
from containers import Engine, buildx_plugin, detect_engine
from test_container import local_registry

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container")]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SCRIPTS = {"aws": ["aws_ecs"], "aws_eb": ["aws_eb"]}  # deploy/<folder>/deploy.sh: its platform
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = {"Accept": fake_aws.MANIFEST_TYPES}
# What ends each deploy after its image step: ECS's next call is refused by the stand-in aws
# (stop_after_ecr); Elastic Beanstalk's bundle step refuses an image outside ECR's host names first.
NEXT_STEP = {"aws": "(StoppedByTest)", "aws_eb": "not an ECR image by digest"}
# The outputs each script reads before its image step, as its stack would give them.
OUTPUTS = {
    "aws": {"ClusterName": "cluster", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/exec",
            "TaskRoleArn": "arn:aws:iam::123456789012:role/task", "TaskSubnetIds": "subnet-a,subnet-b",
            "TaskSecurityGroupId": "sg-1", "AssignPublicIp": "DISABLED"},
    "aws_eb": {"ApplicationName": "my-service-staging", "EnvironmentName": "my-service-staging"},
}  # fmt: skip


@dataclass
class Sources:
    registry: str  # host:port of the source registry
    repository: str
    index: str  # <registry>/<repository>@sha256:... of the image index (two platforms, an attestation)
    manifest: str  # ... of the linux/amd64 manifest alone
    children: list[str]  # the index's manifests, by digest

    def ref(self, kind: str) -> str:
        return self.index if kind == "index" else self.manifest


@pytest.fixture(scope="module")
def docker() -> Engine:
    found = detect_engine("docker")
    need(found is not None, "a Docker engine (FD_DOCKER) to push the source image")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def plugins(docker: Engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cli-plugins folder for DOCKER_CONFIG: the client's own buildx where it has one, else
    Debian testing's; checked to run under this client."""
    folder = tmp_path_factory.mktemp("docker-plugins") / "cli-plugins"
    folder.mkdir()
    if subprocess.run([docker.exe[0], "buildx", "version"], capture_output=True, timeout=60).returncode != 0:
        try:
            (folder / "docker-buildx").symlink_to(buildx_plugin())
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            need(False, f"docker buildx (the client has none, and Debian's docker-buildx could not be had: {error})")
    env = {**os.environ, "DOCKER_CONFIG": str(folder.parent)}
    version = subprocess.run([docker.exe[0], "buildx", "version"], capture_output=True, text=True, env=env, timeout=60)
    need(version.returncode == 0, f"docker buildx runs under {docker.exe[0]}: {version.stderr.strip()}")
    return folder


@dataclass
class Registries:
    source: str  # host:port
    ecr: str
    ecr_folder: Path  # its data and registry.log
    source_folder: Path


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    with ExitStack() as stack:
        folders = [tmp_path_factory.mktemp(f"fd-registry-{name}-{WORKER}") for name in ("source", "ecr")]
        source, ecr = (stack.enter_context(local_registry(folder)) for folder in folders)
        yield Registries(source, ecr, folders[1], folders[0])


def _upload(base: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = httpx.post(f"{base}/blobs/uploads/", timeout=30)
    assert started.status_code == 202, started.text
    location = httpx.URL(base).join(started.headers["Location"])
    done = httpx.put(location.copy_merge_params({"digest": digest}), content=data, timeout=30)
    assert done.status_code == 201, done.text
    return digest


def _put_manifest(base: str, reference: str, media_type: str, body: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(body).encode()
    put = httpx.put(f"{base}/manifests/{reference}", content=data, headers={"Content-Type": media_type}, timeout=30)
    assert put.status_code == 201, put.text
    digest = put.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    return digest, len(data)


def _image_config(architecture: str, os_name: str, layer: bytes) -> bytes:
    """An image config whose one layer is layer (uncompressed: its diff_id is its digest)."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    rootfs = {"type": "layers", "diff_ids": [diff_id]}
    return json.dumps({"architecture": architecture, "os": os_name, "config": {}, "rootfs": rootfs}).encode()


def _one_layer(
    base: str,
    reference: str,
    layer: bytes,
    layer_type: str,
    config: bytes,
    config_type: str = "application/vnd.oci.image.config.v1+json",
    **fields: Any,
) -> tuple[str, int]:
    """An OCI manifest of one layer and its config, both uploaded, put under reference (by its own
    digest when reference is empty); fields: layer annotations or top-level fields (artifactType,
    subject). Returns its digest and size."""
    layer_digest, config_digest = _upload(base, layer), _upload(base, config)
    body = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, **fields.get("top", {}),
        "config": {"mediaType": config_type, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": len(layer),
                    **({"annotations": fields["annotations"]} if "annotations" in fields else {})}],
    }  # fmt: skip
    by_digest = "sha256:" + hashlib.sha256(json.dumps(body).encode()).hexdigest()
    return _put_manifest(base, reference or by_digest, OCI_MANIFEST, body)


def _manifest(registry: str, repository: str, reference: str) -> httpx.Response:
    return httpx.get(f"http://{registry}/v2/{repository}/manifests/{reference}", headers=MANIFEST_ACCEPT, timeout=30)


@pytest.fixture(scope="module")
def sources(docker: Engine, registries: Registries, tmp_path_factory: pytest.TempPathFactory) -> Sources:
    """A real image for linux/amd64 and linux/arm64, built and pushed by the Docker engine, and
    the image index CI's build pushes: both manifests and a provenance attestation of the amd64 one."""
    registry = registries.source
    repository = "acme/my-service"
    context = tmp_path_factory.mktemp("source-image")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY release /release\n")
    pushed: dict[str, tuple[str, int, str]] = {}  # platform -> (digest, size, media type)
    for arch in ("amd64", "arm64"):
        # A layer of each platform's own, as compiled code gives: with one layer shared by both
        # manifests, a copy here once failed with the registry refusing a manifest ("blob unknown
        # to registry") while both pushed that blob at once.
        (context / "release").write_text(f"built for linux/{arch} by the ECR copy test on {WORKER}\n")
        tag = f"{registry}/{repository}:{arch}"
        docker.build(context, tag, None, "--platform", f"linux/{arch}")
        docker.run("push", tag, timeout=300)
        got = _manifest(registry, repository, arch)
        assert got.status_code == 200, got.text
        pushed[arch] = (got.headers["Docker-Content-Digest"], len(got.content), got.headers["Content-Type"])
    assert pushed["amd64"][0] != pushed["arm64"][0]
    base = f"http://{registry}/v2/{repository}"
    amd64 = pushed["amd64"][0]
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": f"pkg:docker/{repository}@main?platform=linux%2Famd64",
                     "digest": {"sha256": amd64.removeprefix("sha256:")}}],
        "predicate": {"buildType": "https://mobyproject.org/buildkit@v1", "builder": {"id": ""}, "metadata": {}},
    }  # fmt: skip
    layer = json.dumps(statement).encode()
    attestation, attestation_size = _one_layer(
        base, "attestation", layer, "application/vnd.in-toto+json", _image_config("unknown", "unknown", layer),
        annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
    )  # fmt: skip
    manifests = [
        {"mediaType": media, "digest": digest, "size": size, "platform": {"architecture": arch, "os": "linux"}}
        for arch, (digest, size, media) in pushed.items()
    ]
    manifests.append({"mediaType": OCI_MANIFEST, "digest": attestation, "size": attestation_size,
                      "platform": {"architecture": "unknown", "os": "unknown"},
                      "annotations": {"vnd.docker.reference.digest": amd64,
                                      "vnd.docker.reference.type": "attestation-manifest"}})  # fmt: skip
    index, _ = _put_manifest(
        base, "main", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    )
    return Sources(registry, repository, f"{registry}/{repository}@{index}", f"{registry}/{repository}@{amd64}",
                   [m["digest"] for m in manifests])  # fmt: skip


@pytest.fixture(scope="module")
def projects(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ecr-copy")
    return {folder: render_template(template_src, root / folder, platforms=platforms)
            for folder, platforms in SCRIPTS.items()}  # fmt: skip


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    state: dict[str, Any]
    config: Path  # the run's DOCKER_CONFIG


def _deploy(
    project: Path, folder: str, image_ref: str, ecr: str, repository: str, docker: Engine, plugins: Path, tmp: Path
) -> Run:
    """deploy/<folder>/deploy.sh staging with IMAGE_REF, ECR being the registry ecr, the real
    Docker client and buildx; the stand-in aws ends the deploy after its image step."""
    tmp.mkdir(parents=True)
    state = {"outputs": OUTPUTS[folder], "parameters": {"RepositoryName": repository, "Environment": "staging"},
             "ecr_registry": ecr, "stop_after_ecr": True}  # fmt: skip
    env = {**os.environ, **fake_aws.install(tmp / "bin", state, tmp / "state.json", engine=False)}
    client = shutil.which(docker.exe[0])
    assert client, f"{docker.exe[0]} not found"
    (tmp / "bin" / "docker").symlink_to(client)  # FD_DOCKER, not whichever docker PATH finds first
    config = tmp / "docker-config"
    config.mkdir()
    (config / "cli-plugins").symlink_to(plugins)
    env |= {"DOCKER_CONFIG": str(config), "IMAGE_REF": image_ref, "AWS_REGION": "us-east-1"}
    env.pop("IMAGE_TAG", None)
    result = subprocess.run([str(project / f"deploy/{folder}/deploy.sh"), "staging"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    print(f"--- deploy/{folder}/deploy.sh IMAGE_REF={image_ref} exited {result.returncode}\n"
          f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")  # fmt: skip
    return Run(result, json.loads((tmp / "state.json").read_text()), config)


def _writes(ecr_folder: Path) -> int:
    """How many write requests (PUT, POST, PATCH, DELETE) the ECR registry has answered so far."""
    log = (ecr_folder / "registry.log").read_text(errors="replace")
    return len(re.findall(r"msg=\"response completed.*http\.request\.method=(?:PUT|POST|PATCH|DELETE)\b", log))


def _tags(registry: str, repository: str) -> list[str]:
    listed = httpx.get(f"http://{registry}/v2/{repository}/tags/list", timeout=30)
    return list(listed.json().get("tags") or []) if listed.status_code == 200 else []


@pytest.mark.parametrize("kind", ["index", "manifest"])
@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_ci_image_is_copied_to_ecr_with_its_digest_once(
    folder: str,
    kind: str,
    projects: dict[str, Path],
    sources: Sources,
    registries: Registries,
    docker: Engine,
    plugins: Path,
    tmp_path: Path,
) -> None:
    ecr, ecr_folder = registries.ecr, registries.ecr_folder
    repository = f"my-service-{folder.replace('_', '-')}-{kind}-{WORKER}"
    image_ref = sources.ref(kind)
    digest = image_ref.rsplit("@", 1)[1]
    first = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "first")
    assert f"Copied {image_ref} to {ecr}/{repository}@{digest}." in first.result.stdout, first.result.stderr
    assert NEXT_STEP[folder] in first.result.stderr, "the deploy went on to its next step"
    assert first.state.get("refused", []) == [], "every aws call passed botocore's model"
    # ECR holds exactly the source's manifest (same bytes, so the same digest) under the one tag.
    source, copied = _manifest(sources.registry, sources.repository, digest), _manifest(ecr, repository, digest)
    assert copied.status_code == 200, copied.text
    assert copied.headers["Docker-Content-Digest"] == digest and copied.content == source.content
    assert _tags(ecr, repository) == [f"sha256-{digest.removeprefix('sha256:')}"]
    tagged = _manifest(ecr, repository, f"sha256-{digest.removeprefix('sha256:')}")
    assert tagged.headers["Docker-Content-Digest"] == digest
    if kind == "index":  # both platforms and the attestation came along, byte for byte
        assert json.loads(copied.content)["mediaType"] == OCI_INDEX
        for child in sources.children:
            here = _manifest(ecr, repository, child)
            assert (
                here.status_code == 200
                and here.content == _manifest(sources.registry, sources.repository, child).content
            )
    for manifest in [digest] if kind == "manifest" else sources.children:
        body = json.loads(_manifest(ecr, repository, manifest).content)
        for blob in [body["config"], *body["layers"]]:
            held = httpx.head(f"http://{ecr}/v2/{repository}/blobs/{blob['digest']}", timeout=30)
            assert held.status_code == 200, f"{blob['digest']} of {manifest} is not in ECR"

    # The same digest again: ECR has it, nothing is copied (no login, no write to the registry).
    writes = _writes(ecr_folder)
    second = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "second")
    assert f"{ecr}/{repository}@{digest} is already in ECR: not copying." in second.result.stdout, second.result.stderr
    assert NEXT_STEP[folder] in second.result.stderr
    assert _writes(ecr_folder) == writes, "the second run wrote to ECR"
    assert not (second.config / "config.json").exists(), "the second run logged in to ECR"
    assert _tags(ecr, repository) == [f"sha256-{digest.removeprefix('sha256:')}"]


def _mutated(project: Path, tmp: Path, old: str, new: str) -> Path:
    """A copy of project whose deploy scripts say new where they said old (once)."""
    mutated = tmp / "project"
    shutil.copytree(project, mutated, symlinks=True)
    for script in mutated.glob("deploy/*/deploy.sh"):
        text = script.read_text()
        assert text.count(old) == 1, f"{script} says {old!r} {text.count(old)} times"
        script.write_text(text.replace(old, new))
    return mutated


@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_a_copy_that_leaves_ecr_without_the_digest_stops_the_deploy(
    folder: str,
    projects: dict[str, Path],
    sources: Sources,
    registries: Registries,
    docker: Engine,
    plugins: Path,
    tmp_path: Path,
) -> None:
    """The check after the copy asks ECR itself: a copy that exits 0 but leaves the repository
    without the source digest (here its tag named another repository) stops the deploy with the
    script's message. (buildx copies the source's manifests by digest even where it writes a new
    index under the tag, with --platform or without --prefer-index=false, so a real buildx copy
    into the right repository always leaves the digest there.)"""
    ecr = registries.ecr
    project = _mutated(projects[folder], tmp_path, '--tag "$uri:$2"', '--tag "$uri-elsewhere:$2"')
    repository = f"my-service-{folder.replace('_', '-')}-elsewhere-{WORKER}"
    digest = sources.index.rsplit("@", 1)[1]
    run = _deploy(project, folder, sources.index, ecr, repository, docker, plugins, tmp_path / "run")
    assert run.result.returncode == 1, run.result.stdout + run.result.stderr
    assert (f"ECR has no image {digest} after copying {sources.index} (the copy changed the digest): "
            "nothing was deployed") in run.result.stderr  # fmt: skip
    assert NEXT_STEP[folder] not in run.result.stderr and "Copied" not in run.result.stdout
    assert _manifest(ecr, repository, digest).status_code == 404
    assert _manifest(ecr, f"{repository}-elsewhere", digest).status_code == 200


def test_without_prefer_index_false_the_tag_names_a_new_index(
    projects: dict[str, Path], sources: Sources, registries: Registries, docker: Engine, plugins: Path, tmp_path: Path
) -> None:
    """Why the scripts pass --prefer-index=false: without it buildx wraps a single manifest in an
    index of its own, so the sha256-<hex> tag names another digest than the one it is named after
    (the manifest still lands, as that index's child, so the deploy itself would go on)."""
    ecr = registries.ecr
    project = _mutated(projects["aws"], tmp_path, "imagetools create --prefer-index=false", "imagetools create")
    repository = f"my-service-wrapped-{WORKER}"
    digest = sources.manifest.rsplit("@", 1)[1]
    run = _deploy(project, "aws", sources.manifest, ecr, repository, docker, plugins, tmp_path / "run")
    assert f"Copied {sources.manifest} to {ecr}/{repository}@{digest}." in run.result.stdout, run.result.stderr
    tagged = _manifest(ecr, repository, f"sha256-{digest.removeprefix('sha256:')}")
    assert tagged.headers["Docker-Content-Digest"] != digest
    assert [m["digest"] for m in json.loads(tagged.content)["manifests"]] == [digest]


@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_a_digest_the_source_does_not_hold_copies_nothing(
    folder: str,
    projects: dict[str, Path],
    sources: Sources,
    registries: Registries,
    docker: Engine,
    plugins: Path,
    tmp_path: Path,
) -> None:
    ecr = registries.ecr
    repository = f"my-service-{folder.replace('_', '-')}-missing-{WORKER}"
    missing = f"{sources.registry}/{sources.repository}@sha256:{'0' * 64}"
    run = _deploy(projects[folder], folder, missing, ecr, repository, docker, plugins, tmp_path / "run")
    assert run.result.returncode != 0
    assert f"could not copy {missing} to ECR" in run.result.stderr, run.result.stderr
    assert NEXT_STEP[folder] not in run.result.stderr and "Copied" not in run.result.stdout
    assert _tags(ecr, repository) == []


# cosign's manifests beside an image, as the pinned versions write them (derive()'s ACTIONS and
# SUPPLY_CHAIN_TOOLS): GitHub's cosign-installer v4.1.2 installs cosign v3.0.6, whose `sign`
# writes a Sigstore bundle as an OCI 1.1 referrer (a manifest whose subject is the image, pushed by
# digest; go-containerregistry lists it in an index under the referrers fallback tag sha256-<hex>
# where the registry has no referrers API, as GHCR has none); GitLab's cosign v2.5.3 tags its
# signature sha256-<hex>.sig and the `attest` one sha256-<hex>.att. Real signatures need Fulcio and
# Rekor, which no test machine reaches: these are stand-ins of the same shape (media types, tags,
# subject), which is all the copy looks at.
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN2_LAYERS = {  # the layer of each cosign 2 tag: a signed payload, an in-toto statement in DSSE
    "sig": "application/vnd.dev.cosign.simplesigning.v1+json",
    "att": "application/vnd.dsse.envelope.v1+json",
}


def _small_image(registry: str, repository: str, note: str) -> str:
    """A one-layer image of its own (note makes it unique) pushed over the registry API, as a
    laptop's push would leave it: nothing beside it. Returns <registry>/<repository>@<digest>."""
    base = f"http://{registry}/v2/{repository}"
    layer = f"{note}\n".encode()
    config = _image_config("amd64", "linux", layer)
    digest, _ = _one_layer(base, "main", layer, "application/vnd.oci.image.layer.v1.tar", config)
    return f"{registry}/{repository}@{digest}"


def _stand_in(base: str, reference: str, layer_type: str, note: str, **extra: Any) -> tuple[str, int, str]:
    """A cosign-shaped manifest (one small layer of layer_type, extra: top-level fields such as
    artifactType and subject, the config's media type) put under reference, by its own digest
    when reference is empty (as cosign 3 pushes a referrer); returns its digest, size and the
    digest of its layer."""
    layer = f"{note}\n".encode()
    digest, size = _one_layer(
        base, reference, layer, layer_type, b"{}", extra.get("config_type", EMPTY_CONFIG), top=extra.get("top", {})
    )
    return digest, size, "sha256:" + hashlib.sha256(layer).hexdigest()


def _sign(image_ref: str, scheme: str) -> dict[str, str]:
    """Stand-ins of what cosign stores beside image_ref, per scheme ("cosign2": the .sig and .att
    tags; "cosign3": a referrer and the fallback tag's index); returns {source tag: digest}."""
    registry, rest = image_ref.split("/", 1)
    repository, digest = rest.rsplit("@", 1)
    base, hex_ = f"http://{registry}/v2/{repository}", digest.removeprefix("sha256:")
    if scheme == "cosign2":
        return {f"sha256-{hex_}.{kind}": _stand_in(base, f"sha256-{hex_}.{kind}", layer, f"{kind} of {image_ref}",
                                                   config_type="application/vnd.oci.image.config.v1+json")[0]
                for kind, layer in COSIGN2_LAYERS.items()}  # fmt: skip
    subject = _manifest(registry, repository, digest)
    referrer, size, _ = _stand_in(base, "", BUNDLE, f"bundle of {image_ref}", top={
        "artifactType": BUNDLE,
        "subject": {"mediaType": subject.headers["Content-Type"], "digest": digest, "size": len(subject.content)},
    })  # fmt: skip
    index, _ = _put_manifest(base, f"sha256-{hex_}", OCI_INDEX, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                             "manifests": [{"mediaType": OCI_MANIFEST, "digest": referrer, "size": size,
                                            "artifactType": BUNDLE}]})  # fmt: skip
    return {f"sha256-{hex_}": index}


def _ecr_tag(tag: str) -> str:
    """The tag ECR gets for a source tag: its own, but the fallback tag sha256-<hex> (in ECR the
    image's) becomes sha256-<hex>.referrers."""
    return tag if "." in tag else f"{tag}.referrers"


@pytest.mark.parametrize("scheme", ["cosign2", "cosign3"])
@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_cosign_signatures_come_along_by_digest_once(
    folder: str,
    scheme: str,
    projects: dict[str, Path],
    registries: Registries,
    docker: Engine,
    plugins: Path,
    tmp_path: Path,
) -> None:
    """What cosign stored beside the image in the source reaches ECR by digest with the image:
    GitLab's cosign 2 tags (sha256-<hex>.sig, .att) under the same tags, GitHub's cosign 3
    referrers index (the fallback tag sha256-<hex>) under sha256-<hex>.referrers with its
    referrer manifest byte for byte (subject and all, which ECR's referrers API lists), every blob
    with them. A second run finds all of it in ECR: no login, no write. The signatures are
    stand-ins of cosign's layout (Fulcio is unreachable here, and the copy never reads them)."""
    ecr, ecr_folder, source = registries.ecr, registries.ecr_folder, registries.source
    name = f"{folder.replace('_', '-')}-{scheme}-{WORKER}"
    image_ref = _small_image(source, f"acme/signed-{name}", f"signed image {name}")
    source_repository, digest = image_ref.split("/", 1)[1].rsplit("@", 1)
    signed = _sign(image_ref, scheme)
    repository = f"my-service-signed-{name}"
    first = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "first")
    assert f"Copied {image_ref} to {ecr}/{repository}@{digest}." in first.result.stdout, first.result.stderr
    for tag in signed:
        assert (f"Copied {source}/{source_repository}:{tag} to {ecr}/{repository}:{_ecr_tag(tag)}."
                in first.result.stdout), first.result.stderr  # fmt: skip
    assert "No cosign signature" not in first.result.stdout
    assert NEXT_STEP[folder] in first.result.stderr, "the deploy went on to its next step"
    assert sorted(_tags(ecr, repository)) == sorted([f"sha256-{digest.removeprefix('sha256:')}",
                                                     *map(_ecr_tag, signed)])  # fmt: skip
    for tag, signature in signed.items():
        held = _manifest(ecr, repository, _ecr_tag(tag))
        assert held.status_code == 200 and held.headers["Docker-Content-Digest"] == signature, held.text
        assert held.content == _manifest(source, source_repository, tag).content
        body = json.loads(held.content)
        manifests = [m["digest"] for m in body.get("manifests", [])]  # the referrers index's
        for manifest in manifests or [signature]:
            copied, original = _manifest(ecr, repository, manifest), _manifest(source, source_repository, manifest)
            assert copied.status_code == 200 and copied.content == original.content
            inner = json.loads(copied.content)
            if manifests:
                assert inner["subject"]["digest"] == digest, "the referrer still names the image"
            for blob in [inner["config"], *inner["layers"]]:
                got = httpx.head(f"http://{ecr}/v2/{repository}/blobs/{blob['digest']}", timeout=30)
                assert got.status_code == 200, f"{blob['digest']} of {manifest} is not in ECR"

    writes = _writes(ecr_folder)
    second = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "second")
    assert f"{ecr}/{repository}@{digest} is already in ECR: not copying." in second.result.stdout, second.result.stderr
    for tag in signed:
        assert f"{ecr}/{repository}:{_ecr_tag(tag)} is already in ECR: not copying." in second.result.stdout
    assert "Copied" not in second.result.stdout
    assert NEXT_STEP[folder] in second.result.stderr
    assert _writes(ecr_folder) == writes, "the second run wrote to ECR"
    assert not (second.config / "config.json").exists(), "the second run logged in to ECR"


@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_an_unsigned_image_deploys_saying_so_in_one_line(
    folder: str, projects: dict[str, Path], registries: Registries, docker: Engine, plugins: Path, tmp_path: Path
) -> None:
    """An image with nothing of cosign's beside it (a laptop's push) is copied alone and the deploy
    goes on, with one line saying no signature was found. The source here also tags the image
    itself sha256-<hex> (as a repository this script copied into does): that is not a referrers
    index, and it is not copied twice."""
    ecr, source = registries.ecr, registries.source
    name = f"{folder.replace('_', '-')}-{WORKER}"
    image_ref = _small_image(source, f"acme/unsigned-{name}", f"unsigned image {name}")
    source_repository, digest = image_ref.split("/", 1)[1].rsplit("@", 1)
    hex_ = digest.removeprefix("sha256:")
    itself = _manifest(source, source_repository, digest)
    _put_manifest(f"http://{source}/v2/{source_repository}", f"sha256-{hex_}", OCI_MANIFEST, json.loads(itself.content))
    repository = f"my-service-unsigned-{name}"
    run = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "run")
    assert f"Copied {image_ref} to {ecr}/{repository}@{digest}." in run.result.stdout, run.result.stderr
    said = [line for line in run.result.stdout.splitlines() if "signature" in line]
    assert said == [f"No cosign signature found for {image_ref} (no sha256-{hex_}.sig, .att, .sbom or referrers "
                    "tag beside it): ECR has the image alone."], run.result.stdout  # fmt: skip
    assert NEXT_STEP[folder] in run.result.stderr, "the deploy went on to its next step"
    assert _tags(ecr, repository) == [f"sha256-{hex_}"]


@pytest.mark.parametrize("folder", list(SCRIPTS))
def test_a_signature_that_cannot_be_copied_stops_the_deploy(
    folder: str, projects: dict[str, Path], registries: Registries, docker: Engine, plugins: Path, tmp_path: Path
) -> None:
    """A signature the source lists but cannot serve (here its layer's blob is gone from the
    source registry's storage) fails all three attempts, and the deploy stops with the script's
    message before its next step: ECR has the image but no signature tag."""
    ecr, source = registries.ecr, registries.source
    name = f"{folder.replace('_', '-')}-{WORKER}"
    image_ref = _small_image(source, f"acme/broken-{name}", f"image with a broken signature {name}")
    source_repository, digest = image_ref.split("/", 1)[1].rsplit("@", 1)
    tag = f"sha256-{digest.removeprefix('sha256:')}.sig"
    base = f"http://{source}/v2/{source_repository}"
    signature, _, layer = _stand_in(base, tag, COSIGN2_LAYERS["sig"], f"signature of {image_ref}, lost")
    blob = registries.source_folder / "data/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:]
    shutil.rmtree(blob)
    assert httpx.head(f"{base}/blobs/{layer}", timeout=30).status_code == 404
    repository = f"my-service-broken-{name}"
    run = _deploy(projects[folder], folder, image_ref, ecr, repository, docker, plugins, tmp_path / "run")
    assert run.result.returncode == 1, run.result.stdout + run.result.stderr
    assert "copy attempt 2 of 3 failed: trying again" in run.result.stderr
    assert (f"could not copy {source}/{source_repository}:{tag} ({signature}, cosign's for {image_ref}) to ECR as "
            f"{ecr}/{repository}:{tag}: nothing was deployed") in run.result.stderr  # fmt: skip
    assert NEXT_STEP[folder] not in run.result.stderr
    assert _tags(ecr, repository) == [f"sha256-{digest.removeprefix('sha256:')}"]


def test_a_signature_ecr_holds_at_another_digest_stops_the_deploy(
    projects: dict[str, Path], registries: Registries, docker: Engine, plugins: Path, tmp_path: Path
) -> None:
    """cosign adds to its .sig manifest when a digest is signed again, so the source's tag can
    name a newer digest than ECR's immutable one: the deploy stops before copying, with the
    message that says which tag to delete, and ECR's tag is left as it was."""
    ecr, source = registries.ecr, registries.source
    image_ref = _small_image(source, f"acme/resigned-{WORKER}", f"image signed twice {WORKER}")
    source_repository, digest = image_ref.split("/", 1)[1].rsplit("@", 1)
    signed = _sign(image_ref, "cosign2")
    tag = f"sha256-{digest.removeprefix('sha256:')}.sig"
    repository = f"my-service-resigned-{WORKER}"
    older, _, _ = _stand_in(f"http://{ecr}/v2/{repository}", tag, COSIGN2_LAYERS["sig"], "the first signature")
    run = _deploy(projects["aws"], "aws", image_ref, ecr, repository, docker, plugins, tmp_path / "run")
    assert run.result.returncode == 1, run.result.stdout + run.result.stderr
    assert (f"ECR holds {ecr}/{repository}:{tag} as {older}, but {source}/{source_repository}:{tag} is "
            f"{signed[tag]} (signed again since the last copy?)") in run.result.stderr  # fmt: skip
    assert f"--image-ids imageTag={tag}) and deploy again; nothing was deployed" in run.result.stderr
    assert NEXT_STEP["aws"] not in run.result.stderr
    assert _manifest(ecr, repository, tag).headers["Docker-Content-Digest"] == older
