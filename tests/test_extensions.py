"""Unit tests of extensions/: the filters copier.yml validates with and the derived values."""

from __future__ import annotations

import importlib.util
import keyword
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXTENSIONS = Path(__file__).resolve().parent.parent / "extensions"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"fd_{name}", EXTENSIONS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


filters = _load("filters")
context = _load("context")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("My Service", "my-service"),
        ("Orders API v2", "orders-api-v2"),
        ("  Café  Crème!! ", "cafe-creme"),
        ("2024 Billing", "billing"),
        ("a" * 80, "a" * 40),
    ],
)
def test_slugify_gives_valid_slugs(name: str, slug: str) -> None:
    assert filters.slugify(name) == slug
    assert filters.is_slug(slug)


@pytest.mark.parametrize("bad", ["My-Service", "my_service", "-my", "my--service", "my-", "9lives", "a" * 41])
def test_is_slug_refuses(bad: str) -> None:
    assert not filters.is_slug(bad)


@pytest.mark.parametrize(
    ("slug", "ident"),
    [("my-service", "my_service"), ("orders-api-v2", "orders_api_v2"), ("class", "class_app"), ("", "app")],
)
def test_to_identifier_gives_importable_names(slug: str, ident: str) -> None:
    assert filters.to_identifier(slug) == ident
    assert ident.isidentifier() and not keyword.iskeyword(ident)
    assert filters.is_identifier(ident)


@pytest.mark.parametrize("bad", ["import", "My_pkg", "1pkg", "my-pkg", "_private"])
def test_is_identifier_refuses(bad: str) -> None:
    assert not filters.is_identifier(bad)


def test_email_and_hostname_checks() -> None:
    assert filters.is_email("dev@example.com")
    assert not filters.is_email("dev@example")
    assert not filters.is_email("dev example.com")
    assert filters.is_hostname("api.example.com")
    assert not filters.is_hostname("https://api.example.com")
    assert not filters.is_hostname("api.example.com/path")
    assert not filters.is_hostname("localhost")


def test_bad_origins_names_each_wrong_entry() -> None:
    assert filters.bad_origins("") == []
    assert filters.bad_origins("https://app.example.com, http://localhost:3000") == []
    assert filters.bad_origins("https://ok.example.com,*,https://x.example.com/") == ['"*"', '"https://x.example.com/"']


def test_sqlite_refusals_name_the_platforms() -> None:
    assert filters.sqlite_refusals(["railway", "vm"], "sqlite") == []
    assert filters.sqlite_refusals(["aws_ecs", "vm", "kubernetes"], "sqlite") == ["aws_ecs", "kubernetes"]
    assert filters.sqlite_refusals(["aws_ecs"], "postgresql") == []
    assert "ephemeral" in filters.sqlite_refusal_reason(["aws_ecs"], "sqlite")


def test_derive_defaults() -> None:
    derived = context.derive({"package_name": "shop", "project_slug": "shop", "platforms": ["railway"]})
    assert derived["app_module"] == "shop.main:create_app"
    assert derived["db_scheme"] == "postgresql+asyncpg"
    assert derived["migration_argv"] == ["alembic", "upgrade", "head"]
    assert derived["migration_command"] == "alembic upgrade head"
    assert derived["bind_host"] == "::"  # Railway's private network is IPv6
    assert derived["serve_argv"] == ["python", "-m", "shop.serve"]
    assert derived["healthcheck_argv"] == ["python", "-m", "shop.healthcheck"]
    assert derived["placeholder"]("production") == "shop_production_your_key_here"
    assert derived["placeholder"]("staging", "password") == "shop_staging_your_password_here"


def test_uv_build_requirement_follows_the_pinned_uv_release_line() -> None:
    from packaging.requirements import Requirement

    derived = context.derive({})
    requirement = Requirement(derived["uv_build_requirement"])
    assert requirement.name == "uv_build"
    major, minor, patch = map(int, derived["uv_version"].split("."))
    # The pinned uv builds the project itself (same release line): later patches are fine.
    assert derived["uv_version"] in requirement.specifier
    assert f"{major}.{minor}.{patch + 7}" in requirement.specifier
    assert f"{major}.{minor + 1}.0" not in requirement.specifier


def test_graceful_timeout_stays_below_every_kill_timeout() -> None:
    derived = context.derive({})
    assert derived["graceful_timeout"] < derived["kill_timeout"] <= 120  # ECS caps stopTimeout at 120


@pytest.mark.parametrize(
    ("database", "scheme", "driver", "migrates"),
    [
        ("postgresql", "postgresql+asyncpg", "asyncpg", True),
        ("mysql", "mysql+aiomysql", "aiomysql", True),
        ("sqlite", "sqlite+aiosqlite", "aiosqlite", True),
        ("none", "", "", False),
    ],
)
def test_derive_database(database: str, scheme: str, driver: str, migrates: bool) -> None:
    derived = context.derive({"database": database})
    assert derived["db_scheme"] == scheme
    assert derived["db_driver"] == driver
    assert derived["has_db"] is (database != "none")
    assert bool(derived["migration_command"]) is migrates
    assert derived["db_is_server"] is (database in ("postgresql", "mysql"))
    if driver:
        assert any(req.startswith(driver) for req in derived["db_requirements"])


def test_derive_server_and_worker() -> None:
    assert context.derive({"server": "uvicorn"})["web_concurrency"] == 1
    assert context.derive({"server": "gunicorn"})["web_concurrency"] == 2
    arq = context.derive({"package_name": "shop", "worker": "arq", "redis": True})
    assert arq["worker_argv"] == ["arq", "shop.worker.WorkerSettings"]
    assert arq["has_worker"] and arq["uses_redis"]
    celery = context.derive({"package_name": "shop", "worker": "celery", "redis": True})
    assert celery["worker_argv"][:3] == ["celery", "-A", "shop.worker:celery_app"]
    assert context.derive({"worker": "none"})["worker_argv"] == []


def test_has_dependencies_means_a_database_or_redis() -> None:
    assert context.derive({"database": "postgresql"})["has_dependencies"]
    assert context.derive({"database": "none", "redis": True})["has_dependencies"]
    assert not context.derive({"database": "none", "redis": False})["has_dependencies"]


def test_derive_bind_host_without_railway() -> None:
    assert context.derive({"platforms": ["aws_ecs", "kubernetes"]})["bind_host"] == "0.0.0.0"


def test_derive_environments() -> None:
    derived = context.derive({"domain": "api.example.com"})
    staging, production = derived["environments"]["staging"], derived["environments"]["production"]
    assert production["domain"] == "api.example.com"
    assert staging["domain"] == "staging.api.example.com"
    for env in (staging, production):
        assert 1 <= env["min_replicas"] <= env["replicas"] <= env["max_replicas"]
    assert context.derive({})["environments"]["staging"]["domain"] == ""


def test_hook_updates_the_context_in_place() -> None:
    from jinja2 import Environment

    env = Environment(extensions=[context.ContextUpdater])
    rendered = env.from_string("{{ app_port }} {{ db_scheme }} {{ health_ready_path }}").render(
        _copier_conf={}, database="mysql", package_name="shop"
    )
    assert rendered == "8000 mysql+aiomysql /health/ready"


def test_every_next_step_is_the_platforms_deploy_script() -> None:
    """Issue 13.6: the message after copy gives the one command that deploys, never a bare
    `kubectl apply` of an image with no registry, no digest and no migrations."""
    for platform, step in context.PLATFORM_NEXT_STEPS.items():
        assert f"scripts/deploy.sh {platform}" in step, step
        assert "kubectl apply" not in step, step
