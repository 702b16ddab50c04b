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
    assert filters.sqlite_refusals(["railway", "aws_eb", "vm"], "sqlite") == ["aws_eb"]
    assert "several instances" in filters.sqlite_refusal_reason(["aws_eb"], "sqlite")
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


def test_derive_railway_values() -> None:
    """Railway's overlap fits in the kill timeout with the graceful one, and its managed
    resources run the same server lines as compose."""
    for database, engine in (("postgresql", "postgres"), ("mysql", "mysql")):
        d = context.derive({"database": database, "redis": True, "platforms": ["railway"]})
        assert d["overlap_seconds"] > 0 and d["overlap_seconds"] + d["graceful_timeout"] <= d["kill_timeout"]
        assert d["railway_database"]["engine"] == engine
        assert d["railway_database"]["image"].endswith(f":{d['db_version']}")
        assert d["railway_redis"]["image"] == f"redis:{d['redis_version']}"
    for database in ("sqlite", "none"):
        assert context.derive({"database": database})["railway_database"] is None
    assert context.derive({"redis": False})["railway_redis"] is None
    start = context.derive({"database": "sqlite", "package_name": "shop"})["railway_sqlite_start"]
    assert start == '/bin/sh -c "alembic upgrade head && exec python -m shop.serve"'


# ---------------------------------------------------------------------------------------------
# One rule for free text, and the format filters (issue 12)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "char", ["\n", "\r", "\t", "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\u200b", "\u202e", "\ufeff"]
)
def test_text_error_refuses_control_and_invisible_characters(char: str) -> None:
    message = filters.text_error(f"My{char}Service", "project_name")
    assert message.startswith("project_name holds control or invisible characters")
    assert f"U+{ord(char):04X}" in message
    with pytest.raises(ValueError, match="refusing to render"):
        filters.yaml_str(f"a{char}b")


def test_text_error_accepts_ordinary_text_and_names_length_and_spaces() -> None:
    assert filters.text_error('Café "Orders" API — v2 ✓', "project_name") == ""
    assert "61 characters long: keep it to 60" in filters.text_error("x" * 61, "project_name")
    assert "starts or ends with spaces" in filters.text_error(" x", "author_name")
    assert "backslash" in filters.text_error("a\\", "description")
    assert "backslash" in filters.text_error('a\\"b', "description")
    assert filters.text_error("a \\ b", "description") == ""


@pytest.mark.parametrize(
    ("check", "good"),
    [
        ("is_slug", "my-service"),
        ("is_identifier", "my_service"),
        ("is_email", "dev@example.com"),
        ("is_hostname", "api.example.com"),
        ("is_aws_region", "us-east-1"),
    ],
)
def test_validators_match_the_whole_value(check: str, good: str) -> None:
    function = getattr(filters, check)
    assert function(good)
    for suffix in ["\n", "\r\n", " ", "\nx"]:
        assert not function(good + suffix), f"{check} accepted {good + suffix!r}"


def test_uppercase_hostnames_are_not_hostnames_and_ports_stop_at_65535() -> None:
    assert not filters.is_hostname("API.example.com")
    assert filters.bad_origins("https://a.example.com:65535") == []
    assert filters.bad_origins("https://a.example.com:65536,https://b.example.com:0") == [
        '"https://a.example.com:65536"',
        '"https://b.example.com:0"',
    ]
    assert filters.normalize_origins("HTTPS://App.Example.com , http://LOCALHOST:3000") == [
        "https://app.example.com",
        "http://localhost:3000",
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("json", "standard-library"),
        ("logging", "standard-library"),
        ("distutils", "standard-library"),
        ("fastapi", "dependencies"),
        ("pydantic-settings", "dependencies"),
        ("sentry_sdk", "dependencies"),
        ("uvicorn-worker", "dependencies"),
        ("tests", "test package"),
        ("test", "test package"),
        ("yes", "YAML"),
        ("off", "YAML"),
        ("null", "YAML"),
    ],
)
def test_reserved_names_are_refused_with_a_suggestion(name: str, why: str) -> None:
    message = filters.name_error(name, "package_name")
    assert why in message and message.startswith(f'package_name "{name}"')
    assert f'"{name}_service"' in message
    assert filters.reserved_reason(f"{name}_service".replace("-", "_")) == ""


def test_yaml_json_and_toml_strings_round_trip() -> None:
    import json
    import tomllib

    import yaml

    for text in ['a "b" \\c', "yes", "null", "~", "1e3", "- x", "a: b", "#x", "&a *b", "!!str", "café 😀", "{{ x }}"]:
        assert yaml.safe_load(f"k: {filters.yaml_str(text)}") == {"k": text}
        assert json.loads(filters.json_str(text)) == text
        assert tomllib.loads(f"k = {filters.toml_str(text)}") == {"k": text}


def test_shell_words_and_env_values_are_never_expanded() -> None:
    import subprocess

    for text in ["$(touch x)", "`id`", "a b", "it's", '"q"', "${HOME}", "a;b"]:
        out = subprocess.run(["bash", "-c", f"printf %s {filters.sh_word(text)}"], capture_output=True, text=True)
        assert out.stdout == text
    assert filters.env_value("https://a.example.com,http://b:3000") == "https://a.example.com,http://b:3000"
    assert filters.env_value("a $b") == "'a $b'"
    with pytest.raises(ValueError):
        filters.env_value("it's")


def test_dockerfile_words_use_the_quotes_docker_and_hadolint_agree_on() -> None:
    assert filters.dockerfile_str('Say "hi" $HOME') == "'Say \"hi\" $HOME'"
    assert filters.dockerfile_str('O\'Brien "x" $y') == '"O\'Brien \\"x\\" \\$y"'
    with pytest.raises(ValueError):
        filters.dockerfile_str("trailing\\")


def test_markdown_text_escapes_markup() -> None:
    assert filters.md_text("*bold* <b> [x](y) `c` #1 a_b") == "\\*bold\\* \\<b\\> \\[x\\](y) \\`c\\` \\#1 a\\_b"


def test_token_refuses_anything_but_a_bare_word() -> None:
    assert filters.token("api.example.com") == "api.example.com"
    for bad in ["a b", "a;b", "$(x)", "a\n", ""]:
        with pytest.raises(ValueError):
            filters.token(bad)


@pytest.mark.parametrize(
    "text",
    [
        'Say "hi"',
        "it's",
        "both ' and \"",
        "back \\ slash",
        '"""',
        "\\N{x}",
        "caf\u00e9 \u2013 \U0001f600",
        "x" * 300,
        "a " * 150,
    ],
)
def test_python_literals_evaluate_to_the_text_and_fit_the_line(text: str) -> None:
    import ast

    for column, indent in [(0, 0), (20, 8)]:
        literal = filters.py_str(text, column, indent)
        code = " " * column + literal
        assert ast.literal_eval(code.strip()) == text
        assert all(len(line) <= filters.LINE_LENGTH for line in (" " * column + literal + ",").splitlines())
        assert literal.isascii(), "non-ASCII is escaped (ruff flags ambiguous characters)"
    docstring = filters.py_docstring(text)
    assert ast.get_docstring(ast.parse(docstring)) is not None
    assert all(len(line) <= filters.LINE_LENGTH for line in docstring.splitlines())
    # Wrapping turns spaces (and, inside one long word, nothing) into line breaks; the text stays.
    assert "".join(ast.literal_eval(docstring).split()) == "".join(text.split())
