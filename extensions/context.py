"""Every value derived from the answers, computed once.

Templates read these names from the Copier context; none of them is spelled twice in
`template/`. `derive()` is a pure function so the tests can check it without Copier.
"""

from __future__ import annotations

from typing import Any

from copier_template_extensions import ContextHook

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
# Average CPU use at which autoscaling adds replicas, on every platform that autoscales.
AUTOSCALE_CPU_PERCENT = 70
# Seconds a new instance may take to become ready before a deploy counts as failed.
STARTUP_TIMEOUT = 120
# uv release whose image the Dockerfile copies the uv binary from.
UV_VERSION = "0.13.9"
# Numeric UID and GID of the image's non-root user (files stay owned by root).
APP_UID = 10001
# Redis major.minor line of the compose stack and every platform that provisions Redis.
REDIS_VERSION = "7.4"
REDIS_IMAGE = f"redis:{REDIS_VERSION}-alpine"


def _next_minor(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}"


DATABASES: dict[str, dict[str, Any]] = {
    "postgresql": {
        "scheme": "postgresql+asyncpg",
        "driver": "asyncpg",
        "requirements": ["asyncpg>=0.30"],
        "port": 5432,
        "version": "17",  # the server line; managed databases ask for the same major version
        "image": "postgres:17-alpine",
        "label": "PostgreSQL",
    },
    "mysql": {
        "scheme": "mysql+aiomysql",
        "driver": "aiomysql",
        "requirements": ["aiomysql>=0.2", "cryptography>=43"],  # MySQL 8 auth
        "port": 3306,
        "version": "11.4",
        "image": "mariadb:11.4",
        "label": "MySQL/MariaDB",
    },
    "sqlite": {
        "scheme": "sqlite+aiosqlite",
        "driver": "aiosqlite",
        "requirements": ["aiosqlite>=0.20"],
        "port": None,
        "version": None,
        "image": None,
        "label": "SQLite",
    },
    "none": {
        "scheme": "",
        "driver": "",
        "requirements": [],
        "port": None,
        "version": None,
        "image": None,
        "label": "none",
    },
}

# The folder under deploy/ that holds each platform's files and its deploy.sh.
PLATFORM_DIRS = {
    "railway": "railway",
    "digitalocean": "digitalocean",
    "aws_ecs": "aws",
    "kubernetes": "k8s",
    "vm": "vm",
}

PLATFORM_NEXT_STEPS = {
    "railway": "Railway: see docs/deploy/railway.md, then `scripts/deploy.sh railway staging` (railway up).",
    "digitalocean": "DigitalOcean: `scripts/deploy.sh digitalocean staging` with doctl (docs/deploy/digitalocean.md).",
    "aws_ecs": "AWS ECS: create the stack, then `scripts/deploy.sh aws_ecs staging` (docs/deploy/aws.md).",
    "kubernetes": "Kubernetes: `kubectl apply -k deploy/k8s/overlays/production` (docs/deploy/kubernetes.md).",
    "vm": "VM: `scripts/deploy.sh vm` ships the image over SSH (docs/deploy/vm.md).",
}


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
    db = DATABASES[database]
    has_db = database != "none"
    migration_argv = ["alembic", "upgrade", "head"] if has_db else []
    domain = answers.get("domain") or ""
    slug = answers.get("project_slug") or "app"
    worker_argv = {
        "arq": ["arq", f"{package_name}.worker.WorkerSettings"],
        "celery": ["celery", "-A", f"{package_name}.worker:celery_app", "worker", "--loglevel", "INFO"],
    }.get(worker, [])
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
        "web_concurrency": 2 if server != "uvicorn" else 1,
        # Several worker processes per container (gunicorn, or uvicorn's own --workers).
        "multi_process": server != "uvicorn",
        "has_db": has_db,
        "db_scheme": db["scheme"],
        "db_driver": db["driver"],
        "db_requirements": db["requirements"],
        "db_port": db["port"],
        "db_version": db["version"],
        "db_image": db["image"],
        "db_label": db["label"],
        "db_is_server": database in ("postgresql", "mysql"),
        "migration_argv": migration_argv,
        "migration_command": " ".join(migration_argv),
        # The container's processes: the web server, its health check, the worker.
        "serve_argv": ["python", "-m", f"{package_name}.serve"],
        "healthcheck_argv": ["python", "-m", f"{package_name}.healthcheck"],
        "worker_argv": worker_argv,
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
        # Where a SQLite database lives in the container: a mounted volume (Railway, vm).
        "sqlite_volume_path": "/data",
        # App Platform app names: at most 32 characters, per environment.
        "do_app_names": {
            "production": slug[:32].rstrip("-"),
            "staging": slug[:24].rstrip("-") + "-staging",
        },
        "uses_redis": bool(answers.get("redis")),
        # The app opens connections at start-up (a lifespan, ready checks): database or Redis.
        "has_dependencies": has_db or bool(answers.get("redis")),
        "has_worker": worker != "none",
        "uv_version": UV_VERSION,
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
        "platform_next_steps": PLATFORM_NEXT_STEPS,
        "platform_dirs": PLATFORM_DIRS,
        "placeholder": lambda env, what="key": placeholder(package_name, env, what),
    }


class ContextUpdater(ContextHook):
    """Adds the derived values to the context of every rendered file and path."""

    def hook(self, context: dict[str, Any]) -> None:
        context.update(derive(context))
