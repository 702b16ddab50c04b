"""Kubernetes: the kustomize overlays build, every resource passes kubernetes-validate --strict, and
what they say (probes, ports, timeouts, user, sizes, replicas, domains, commands) is what derive()
says, for several answer sets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import need, render_template
from deploy_checks import (
    PLACEHOLDER_RE,
    answers,
    by_kind,
    derived,
    dockerfile_instructions,
    documents,
    kubernetes_validate,
    kubernetes_validate_files,
    kustomize,
    kustomize_command,
    one,
)

ANSWER_SETS: dict[str, dict[str, Any]] = {
    "postgresql-uvicorn": {"database": "postgresql", "server": "uvicorn", "sentry": True},
    "mysql-gunicorn-celery-domain": {
        "database": "mysql",
        "server": "gunicorn",
        "redis": True,
        "worker": "celery",
        "domain": "api.example.com",
    },
    "nodb-arq-domain-metrics": {
        "database": "none",
        "redis": True,
        "worker": "arq",
        "domain": "svc.example.org",
        "metrics": True,
    },
}
ENVIRONMENTS = ("staging", "production")
# The oldest Kubernetes the docs promise (the preStop sleep action is GA-by-default from 1.30).
OLDEST_KUBERNETES = "1.30"


@pytest.fixture(scope="module")
def k8s_project(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    need(kustomize_command() is not None, "kustomize needed: install kubectl (kubectl kustomize) or kustomize")
    cache: dict[str, Path] = {}

    def _get(key: str) -> Path:
        if key not in cache:
            dest = tmp_path_factory.mktemp(f"k8s-{key}") / "my-service"
            cache[key] = render_template(template_src, dest, platforms=["kubernetes"], ci="none", **ANSWER_SETS[key])
        return cache[key]

    return _get


def overlay(project: Path, environment: str) -> list[dict[str, Any]]:
    return documents(kustomize(project / "deploy/k8s/overlays" / environment))


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_every_rendered_resource_passes_strict_validation(k8s_project: Any, key: str, tmp_path: Path) -> None:
    project = k8s_project(key)
    values = derived(project)
    k8s = project / "deploy/k8s"
    texts = {f"{environment}.yaml": kustomize(k8s / "overlays" / environment) for environment in ENVIRONMENTS}
    if values["has_db"]:
        texts["migrate.yaml"] = kustomize(k8s / "migrate")
    else:
        assert not (k8s / "migrate").exists(), "no database, so no migration Job"
    texts["secret.yaml"] = (k8s / "secret.example.yaml").read_text()
    kubernetes_validate_files(texts, tmp_path)
    kubernetes_validate_files(texts, tmp_path, f"{OLDEST_KUBERNETES}.0")
    assert f"Kubernetes {OLDEST_KUBERNETES} or later" in (project / "docs/deploy/kubernetes.md").read_text()


def test_the_validation_catches_a_misspelled_kind_and_an_unknown_field(k8s_project: Any, tmp_path: Path) -> None:
    """kubernetes-validate alone exits 0 on an unknown kind: the helper must not."""
    text = kustomize(k8s_project("postgresql-uvicorn") / "deploy/k8s/overlays/production")
    with pytest.raises(AssertionError, match="Couldn't find schema"):
        kubernetes_validate(text.replace("kind: PodDisruptionBudget", "kind: PodDisruptionBudgett"), tmp_path)
    with pytest.raises(AssertionError, match="rejected"):
        kubernetes_validate(text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1), tmp_path)
    # And the check against the oldest version is a real one: 1.28 has no preStop sleep action.
    with pytest.raises(AssertionError, match="sleep"):
        kubernetes_validate_files({"old.yaml": text}, tmp_path, "1.28.0")


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_web_deployment_follows_the_derived_values_and_the_image(k8s_project: Any, key: str) -> None:
    project = k8s_project(key)
    values = derived(project)
    # The UID the image runs as, read from the Dockerfile's USER instruction.
    users = [args for keyword, args in dockerfile_instructions(project / "Dockerfile") if keyword == "USER"]
    image_uid = int(users[-1].split(":")[0])
    assert image_uid == values["app_uid"]

    for environment in ENVIRONMENTS:
        docs = overlay(project, environment)
        size = values["environments"][environment]
        namespaces = {d["metadata"].get("namespace") for d in docs}
        assert namespaces == {f"{values['image_name']}-{environment}"}, namespaces
        web = one(docs, "Deployment", f"{answers(project)['project_slug']}-web")
        assert "replicas" not in web["spec"], "the HPA owns the replica count"
        spec = pod_spec(web)
        (container,) = spec["containers"]
        assert container["args"] == values["serve_argv"]
        (port,) = container["ports"]
        assert port["containerPort"] == values["app_port"]
        assert container["livenessProbe"]["httpGet"] == {"path": values["health_live_path"], "port": port["name"]}
        assert container["readinessProbe"]["httpGet"] == {"path": values["health_ready_path"], "port": port["name"]}
        assert container["startupProbe"]["httpGet"]["path"] == values["health_live_path"]
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] == values["startup_timeout"]
        # Stop sequence: the preStop sleep and the server's graceful drain fit inside the grace period.
        assert spec["terminationGracePeriodSeconds"] == values["kill_timeout"]
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep == values["drain_seconds"]
        assert sleep + values["graceful_timeout"] < spec["terminationGracePeriodSeconds"]
        # Hardening.
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == image_uid
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        hardening = container["securityContext"]
        assert hardening["readOnlyRootFilesystem"] is True
        assert hardening["allowPrivilegeEscalation"] is False
        assert hardening["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # This environment's size: CPU units (1024 = 1 CPU) in millicores, memory in MiB.
        resources = container["resources"]
        assert resources["requests"]["cpu"] == f"{size['cpu_units'] * 1000 // 1024}m"
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == f"{size['memory_mib']}Mi"
        # Settings: the ConfigMap the pods read says which environment this is and the port.
        config_name = next(e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e)
        config = one(docs, "ConfigMap", config_name)["data"]
        assert config["ENVIRONMENT"] == environment
        assert config["PORT"] == str(values["app_port"])
        assert config["GRACEFUL_TIMEOUT"] == str(values["graceful_timeout"])
        annotations = web["spec"]["template"]["metadata"].get("annotations", {})
        if answers(project)["metrics"]:
            assert annotations["prometheus.io/port"] == str(values["app_port"])
        else:
            assert "prometheus.io/scrape" not in annotations
        secrets_name = next(e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e)
        assert not set(config) & set(values.get("secret_env_names", ["SECRET_KEY", "DATABASE_URL"]))
        assert secrets_name == f"{answers(project)['project_slug']}-secrets"


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_service_ingress_hpa_and_pdb_per_environment(k8s_project: Any, key: str) -> None:
    project = k8s_project(key)
    values = derived(project)
    for environment in ENVIRONMENTS:
        docs = overlay(project, environment)
        expected = values["environments"][environment]
        web = one(docs, "Deployment", f"{answers(project)['project_slug']}-web")
        pod_labels = web["spec"]["template"]["metadata"]["labels"]
        service = one(docs, "Service")
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == pod_spec(web)["containers"][0]["ports"][0]["name"]
        ingress = one(docs, "Ingress")
        (rule,) = ingress["spec"]["rules"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] == service["spec"]["ports"][0]["name"]
        if expected["domain"]:
            assert rule["host"] == expected["domain"]
            assert ingress["spec"]["tls"][0]["hosts"] == [expected["domain"]]
        else:
            assert "host" not in rule and "tls" not in ingress["spec"]
        hpa = one(docs, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == web["metadata"]["name"]
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
            expected["min_replicas"],
            expected["max_replicas"],
        )
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["target"]["averageUtilization"] == values["autoscale_cpu_percent"]
        pdb = one(docs, "PodDisruptionBudget")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        # One pod may go at a time, so a single-replica environment can still drain its node.
        assert pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"]


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_worker_and_migration_job_run_the_derived_commands(k8s_project: Any, key: str) -> None:
    project = k8s_project(key)
    values = derived(project)
    for environment in ENVIRONMENTS:
        docs = overlay(project, environment)
        workers = by_kind(docs, "Deployment", f"{answers(project)['project_slug']}-worker")
        if not values["has_worker"]:
            assert not workers
            continue
        (worker,) = workers
        assert worker["spec"]["replicas"] == values["environments"][environment]["replicas"]
        spec = pod_spec(worker)
        assert spec["containers"][0]["args"] == values["worker_argv"]
        assert spec["terminationGracePeriodSeconds"] == values["kill_timeout"]
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    if values["has_db"]:
        job = one(documents(kustomize(project / "deploy/k8s/migrate")), "Job")
        spec = pod_spec(job)
        assert spec["containers"][0]["args"] == values["migration_argv"]
        assert spec["restartPolicy"] == "Never"
        assert spec["securityContext"]["runAsUser"] == values["app_uid"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"]}
        assert env["DATABASE_URL"] == {"name": f"{answers(project)['project_slug']}-secrets", "key": "DATABASE_URL"}


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_secret_template_holds_placeholders_only(k8s_project: Any, key: str) -> None:
    project = k8s_project(key)
    values = derived(project)
    (secret,) = documents((project / "deploy/k8s/secret.example.yaml").read_text())
    data = secret["stringData"]
    expected = values.get("secret_env_names") or ["SECRET_KEY"] + (["DATABASE_URL"] if values["has_db"] else [])
    assert set(expected) <= set(data), f"missing from the Secret template: {set(expected) - set(data)}"
    for name, value in data.items():
        pieces = re.split(r"[:/@]", value)
        assert any(re.search(PLACEHOLDER_RE, piece) for piece in pieces), f"{name} holds no placeholder: {value}"
    assert not by_kind(overlay(project, "production"), "Secret"), "real secrets are never applied from the repo"


def test_kubernetes_files_render_only_when_chosen(template_src: Path, tmp_path: Path) -> None:
    project = render_template(template_src, tmp_path / "p", platforms=["railway"], ci="none")
    assert not (project / "deploy/k8s").exists()
    assert not (project / "docs/deploy/kubernetes.md").exists()


def test_deploy_script_refuses_bad_arguments_before_touching_a_cluster(k8s_project: Any) -> None:
    script = k8s_project("postgresql-uvicorn") / "deploy/k8s/deploy.sh"
    env = {"PATH": os.environ["PATH"]}
    bad_env = subprocess.run([str(script), "qa"], capture_output=True, text=True, env=env, timeout=30)
    assert bad_env.returncode == 2 and "Usage:" in bad_env.stderr
    no_image = subprocess.run([str(script), "staging"], capture_output=True, text=True, env=env, timeout=30)
    assert no_image.returncode == 2 and "IMAGE_REF" in no_image.stderr
    for mutable in ("ghcr.io/acme/my-service:latest", "ghcr.io/acme/my-service@sha256:abc"):
        refused = subprocess.run(
            [str(script), "staging"], capture_output=True, text=True, env={**env, "IMAGE_REF": mutable}, timeout=30
        )
        assert refused.returncode == 2 and "by digest" in refused.stderr, mutable
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert helped.returncode == 0 and "Usage:" in helped.stdout


# A stand-in for the cluster side of kubectl (there is no API server here): `kubectl kustomize`
# runs the real kubectl, everything else is recorded; the job state and the rollout result come
# from FAKE_JOB_STATE and FAKE_ROLLOUT.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
set -euo pipefail
if [[ "$1" == kustomize ]]; then exec "$REAL_KUBECTL" "$@"; fi
args=("$@")
echo "kubectl ${args[*]}" >>"$KUBECTL_LOG"
case " ${args[*]} " in
    *" apply -f - "*)
        { echo "--- apply"; cat; } >>"$KUBECTL_LOG"
        # An apply that changes a Deployment's pod template gives it a new revision.
        for name in ${FAKE_CHANGED-my-service-web my-service-worker}; do
            grep -q "name: $name$" "$KUBECTL_LOG" || continue
            now="$(cat "$KUBECTL_LOG.rev.$name" 2>/dev/null || echo "${FAKE_REVISION-3}")"
            echo $((now + 1)) >"$KUBECTL_LOG.rev.$name"
        done
        ;;
    *" get job "*) printf '%s ' "$FAKE_JOB_STATE" ;;
    *" get deployment/"*)  # its revision annotation; none before the first apply (FAKE_REVISION="")
        line="${args[*]}"; name="${line##*get deployment/}"; name="${name%% *}"
        cat "$KUBECTL_LOG.rev.$name" 2>/dev/null || printf '%s' "${FAKE_REVISION-3}"
        ;;
    *" rollout status "*) exit "$FAKE_ROLLOUT" ;;
esac
"""


DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE_REF = f"registry.example.com/acme/my-service@{DIGEST}"


def run_k8s_deploy(
    project: Path,
    tmp_path: Path,
    job_state: str,
    rollout: int,
    image_ref: str | None = IMAGE_REF,
    extra_env: dict[str, str] | None = None,
    extra_path: Path | None = None,
) -> tuple[int, str, str]:
    from deploy_checks import tool

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "kubectl").write_text(FAKE_KUBECTL)
    (fake_bin / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.touch()
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "REAL_KUBECTL": tool("kubectl") or "kubectl",
        "KUBECTL_LOG": str(log),
        "FAKE_JOB_STATE": job_state,
        "FAKE_ROLLOUT": str(rollout),
        # The image CI built and pushed, by digest: nothing is built.
        **({"IMAGE_REF": image_ref} if image_ref else {}),
        **(extra_env or {}),
    }
    if extra_path:
        env["PATH"] = f"{extra_path}:{env['PATH']}"
    # kustomize (in the real kubectl) would refuse a path that is not there.
    need(bool(tool("kubectl")), "kubectl needed for kubectl kustomize")
    result = subprocess.run(
        [str(project / "deploy/k8s/deploy.sh"), "staging"], capture_output=True, text=True, env=env, timeout=120
    )
    return result.returncode, result.stdout + result.stderr, log.read_text()


def applied(log: str) -> list[list[dict[str, Any]]]:
    batches = log.split("--- apply\n")[1:]
    return [documents(batch.split("\nkubectl ")[0]) for batch in batches]


def test_deploy_migrates_with_the_release_image_before_rolling_out(k8s_project: Any, tmp_path: Path) -> None:
    project = k8s_project("mysql-gunicorn-celery-domain")
    values = derived(project)
    status, output, log = run_k8s_deploy(project, tmp_path, "Complete", 0)
    assert status == 0, output
    image = IMAGE_REF
    job_batch, app_batch = applied(log)
    job = one(job_batch, "Job")
    assert job["metadata"]["name"] == "my-service-migrate-0123456789ab"  # one Job per digest, a valid name
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["namespace"] == "my-service-staging"
    assert pod_spec(job)["containers"][0]["image"] == image
    assert pod_spec(job)["containers"][0]["args"] == values["migration_argv"]
    deployments = by_kind(app_batch, "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"my-service-web", "my-service-worker"}
    assert {pod_spec(d)["containers"][0]["image"] for d in deployments} == {image}
    commands = [line for line in log.splitlines() if line.startswith("kubectl ")]
    assert commands.index(next(c for c in commands if " delete job " in c)) < commands.index(
        next(c for c in commands if " apply " in c)
    )
    assert not any("rollout undo" in c for c in commands)
    assert not list((project / "deploy/k8s").glob(".release.*")), "the release folder is removed"


def test_deploy_stops_before_rolling_out_when_migrations_fail(k8s_project: Any, tmp_path: Path) -> None:
    status, output, log = run_k8s_deploy(k8s_project("postgresql-uvicorn"), tmp_path, "Failed", 0)
    assert status == 1, output
    assert "Migrations failed" in output
    assert len(applied(log)) == 1, "only the Job was applied"
    assert "rollout" not in log


def test_deploy_rolls_back_when_the_new_pods_never_become_ready(k8s_project: Any, tmp_path: Path) -> None:
    status, output, log = run_k8s_deploy(k8s_project("nodb-arq-domain-metrics"), tmp_path, "Complete", 1)
    assert status == 1, output
    assert "rolling back" in output
    undone = [line for line in log.splitlines() if "rollout undo" in line]
    assert {line.split()[-1] for line in undone} == {"deployment/my-service-web", "deployment/my-service-worker"}
    assert "migrate" not in log, "no database, no migration Job"


@pytest.mark.parametrize(
    ("changed", "revision", "undone"),
    [
        ("my-service-web", "3", {"deployment/my-service-web"}),  # the worker's template did not change
        ("my-service-web my-service-worker", "", set()),  # a first deploy: no earlier revision to go back to
    ],
)
def test_a_failed_rollout_undoes_only_the_deployments_this_deploy_changed(
    changed: str, revision: str, undone: set[str], k8s_project: Any, tmp_path: Path
) -> None:
    """Issue 13 review: `rollout undo` of a Deployment the apply left alone would roll it back to
    the release before the current one; only those with a new revision are undone."""
    project = k8s_project("nodb-arq-domain-metrics")
    status, output, log = run_k8s_deploy(
        project, tmp_path, "Complete", 1, extra_env={"FAKE_CHANGED": changed, "FAKE_REVISION": revision}
    )
    assert status == 1, output
    assert {line.split()[-1] for line in log.splitlines() if "rollout undo" in line} == undone, log


@pytest.mark.parametrize("key", ANSWER_SETS)
def test_docs_page_names_the_secret_keys_namespaces_and_commands(k8s_project: Any, key: str) -> None:
    project = k8s_project(key)
    values = derived(project)
    page = (project / "docs/deploy/kubernetes.md").read_text()
    (secret,) = documents((project / "deploy/k8s/secret.example.yaml").read_text())
    for name in secret["stringData"]:
        assert f"{name}=" in page, f"the page does not show how to set {name}"
    for environment in ENVIRONMENTS:
        namespace = one(overlay(project, environment), "Service")["metadata"]["namespace"]
        assert f"kubectl create namespace {namespace}" in page
        assert f"scripts/deploy.sh kubernetes {environment}" in page or environment == "staging"
    assert "rollout undo" in page and "minReplicas" in page
    if values["has_db"]:
        assert values["migration_command"] in page


def test_the_migration_job_name_fits_a_dns_label_for_the_longest_slug(template_src: Path, tmp_path: Path) -> None:
    slug = "a" * 40  # the longest slug copier.yml accepts
    project = render_template(template_src, tmp_path / slug, platforms=["kubernetes"], ci="none", project_slug=slug)
    status, output, log = run_k8s_deploy(project, tmp_path, "Complete", 0)
    assert status == 0, output
    name = one(applied(log)[0], "Job")["metadata"]["name"]
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert name == f"{slug}-migrate-0123456789ab"


# A docker that records its arguments; `push` reports the digest as Docker's client does.
FAKE_DOCKER = r"""#!/usr/bin/env bash
echo "docker $*" >>"$DOCKER_LOG"
if [[ "$1" == push ]]; then echo "${2##*:}: digest: $FAKE_DIGEST size: 1789"; fi
"""


def test_deploy_without_a_ci_image_builds_for_the_derived_platform_and_rolls_out_the_pushed_digest(
    k8s_project: Any, tmp_path: Path
) -> None:
    """Issues 13.6 and 13.7: from a laptop the script is still the one command, the image is built
    for the hosts' platform (not the laptop's) and deployed by the digest the push gave."""
    project = k8s_project("postgresql-uvicorn")
    values = derived(project)
    work = tmp_path / "repo"
    shutil.copytree(project, work, ignore=shutil.ignore_patterns(".venv"))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x"], cwd=work, check=True
    )
    fake_bin = tmp_path / "docker-bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text(FAKE_DOCKER)
    (fake_bin / "docker").chmod(0o755)
    docker_log = tmp_path / "docker.log"
    status, output, log = run_k8s_deploy(
        work,
        tmp_path,
        "Complete",
        0,
        image_ref=None,
        extra_env={
            "IMAGE": "registry.example.com/acme/my-service",
            "DOCKER_LOG": str(docker_log),
            "FAKE_DIGEST": DIGEST,
        },
        extra_path=fake_bin,
    )
    assert status == 0, output
    build, push = docker_log.read_text().splitlines()
    assert build.startswith("docker build ") and f"--platform {values['image_platform']}" in build
    assert push.startswith("docker push registry.example.com/acme/my-service:")
    deployments = by_kind(applied(log)[1], "Deployment")
    assert {pod_spec(d)["containers"][0]["image"] for d in deployments} == {IMAGE_REF}


def test_no_kubernetes_file_offers_a_deploy_without_the_digest_or_the_migration(k8s_project: Any) -> None:
    """Issue 13.6: the files' own comments gave `kubectl apply -k deploy/k8s/overlays/<env>` (the
    placeholder image, no migration) and a `:TAG` for the image; they name deploy.sh and a digest."""
    import re

    project = k8s_project(next(iter(ANSWER_SETS)))
    for path in sorted((project / "deploy/k8s").rglob("*.yaml")):
        text = path.read_text()
        assert not re.search(r"kubectl apply -k deploy/k8s/overlays/\w+\s+(#|$)", text, re.M), path
        assert ":TAG" not in text and "release tag" not in text, path
    overlay = (project / "deploy/k8s/overlays/staging/kustomization.yaml").read_text()
    assert "scripts/deploy.sh kubernetes staging" in overlay and "@sha256:" in overlay
