"""Pairwise answer sets render clean projects: no leftover Jinja, no template suffix, valid
Python that ruff accepts as it is, and parseable YAML/JSON/TOML."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from combinations import NAME_CASE_OPTIONS, NAME_CASES, RESERVED_CASES, pairwise, to_answers
from conftest import PROJECT_ENV, UV, render_template, run
from test_words import check_words

ROWS = [to_answers(row) for row in pairwise()]
IDS = [
    f"{a['server']}-{a['database']}-{'+'.join(a['platforms'])}-{a['worker'] if a['redis'] else 'noredis'}"
    f"-{a['reverse_proxy']}-{a['ci']}-py{a['python_version']}"
    for a in ROWS
]
# Jinja left in output; GitHub Actions' ${{ }} and Railway's ${{ }} references are not Jinja.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|%\}|\{#|#\}")
BINARY_SUFFIXES = {".png", ".ico", ".jpg"}


class _TaggedLoader(yaml.SafeLoader):
    """Safe YAML that accepts local tags such as CloudFormation's !Ref and !Sub."""


_TaggedLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts]


def _check_tree(project: Path) -> None:
    problems: list[str] = []
    for path in _files(project):
        rel = path.relative_to(project)
        if path.name.endswith(".jinja"):
            problems.append(f"{rel}: template suffix left")
        if "{" in str(rel) or "}" in str(rel):
            problems.append(f"{rel}: unrendered path")
        if path.suffix in BINARY_SUFFIXES:
            continue
        text = path.read_text()
        if path.name == "script.py.mako":
            continue  # Alembic's own template language
        for number, line in enumerate(text.splitlines(), 1):
            if LEFTOVER_JINJA.search(line):
                problems.append(f"{rel}:{number}: leftover Jinja: {line.strip()[:80]}")
        if path.suffix in (".yml", ".yaml"):
            list(yaml.load_all(text, Loader=_TaggedLoader))  # safe loader subclass
        elif path.suffix == ".json":
            json.loads(text)
        elif path.suffix == ".toml":
            tomllib.loads(text)
        elif path.suffix == ".py":
            compile(text, str(rel), "exec")
        if path.suffix == ".md":
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
                if not (path.parent / target).exists():
                    problems.append(f"{rel}: link to missing {target}")
        if text and not text.endswith("\n"):
            problems.append(f"{rel}: no newline at end of file")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("answers", ROWS, ids=IDS)
def test_pairwise_combination_renders_clean(answers: dict[str, Any], render: Callable[..., Path]) -> None:
    project = render(**answers)
    _check_tree(project)
    package = project / "src" / "my_service"
    assert (package / "main.py").is_file()
    assert ((package / "db.py").is_file()) is (answers["database"] != "none")
    assert ((project / "migrations").is_dir()) is (answers["database"] != "none")
    assert ((package / "worker.py").is_file()) is (answers["worker"] != "none")
    assert ((package / "metrics.py").is_file()) is answers["metrics"]
    assert ((package / "sentry.py").is_file()) is answers["sentry"]
    assert ((package / "redis.py").is_file()) is answers["redis"]
    # ruff as configured by the generated pyproject.toml: no findings and no formatting diff.
    run(["ruff", "check", "--no-cache", "."], cwd=project)
    run(["ruff", "format", "--check", "--no-cache", "."], cwd=project)
    _check_uv_add_lands_below_the_template(project)
    check_words(project)  # tests/test_words.py: "an arq worker", nothing about a database it has not


def test_pairwise_covers_every_pair() -> None:
    """The generator's promise, checked independently of its bookkeeping."""
    from combinations import FACTORS, allowed

    rows = pairwise()
    names = list(FACTORS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for va in FACTORS[a]:
                for vb in FACTORS[b]:
                    if allowed({a: va, b: vb}):
                        assert any(row[a] == va and row[b] == vb for row in rows), (a, va, b, vb)
    assert all(allowed(row) for row in rows)


def test_gitignore_keeps_every_env_file_but_the_example(render: Callable[..., Path]) -> None:
    project = render()
    run(["git", "init", "-q"], cwd=project)
    for name in (".env", ".env.production", ".env.local"):
        (project / name).write_text("X=1\n")
    ignored = run(["git", "check-ignore", ".env", ".env.production", ".env.local"], cwd=project).stdout.split()
    assert ignored == [".env", ".env.production", ".env.local"]
    assert run(["git", "check-ignore", ".env.example"], cwd=project, check=False).returncode == 1


def test_env_example_documents_every_setting_with_placeholders(render: Callable[..., Path]) -> None:
    project = render(redis=True, worker="arq", sentry=True)
    example = (project / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    settings = (project / "src/my_service/settings.py").read_text()
    fields = set(re.findall(r"^    ([a-z_]+): ", settings, re.MULTILINE))
    assert {f.upper() for f in fields} <= names, f"undocumented: {({f.upper() for f in fields}) - names}"
    assert "SECRET_KEY=my_service_development_your_key_here" in example
    assert re.search(r"^DATABASE_URL=postgresql://my_service:my_service_development_your_password_here@", example, re.M)


@pytest.mark.parametrize("names", NAME_CASES, ids=[c["project_name"][:24] for c in NAME_CASES])
def test_edge_names_render_clean_within_the_line_length(names: dict[str, Any], render: Callable[..., Path]) -> None:
    project = render(**NAME_CASE_OPTIONS, **names)
    _check_tree(project)
    package = yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]
    assert (project / "src" / package / "main.py").is_file()
    run(["ruff", "check", "--no-cache", "."], cwd=project)
    run(["ruff", "format", "--check", "--no-cache", "."], cwd=project)


@pytest.mark.parametrize("answers", RESERVED_CASES, ids=[next(iter(c.values())) for c in RESERVED_CASES])
def test_reserved_words_are_refused_before_anything_is_written(
    answers: dict[str, Any], template_src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "reserved"
    with pytest.raises(ValueError, match="choose another name, for example"):
        render_template(template_src, dest, **answers)
    assert not dest.exists()


def _check_uv_add_lands_below_the_template(project: Path) -> None:
    """`uv add` (offline: --frozen) puts the user's requirements after the template's own, so an
    update that changes the template's lines merges with them (docs/update.md). It runs on a copy
    of pyproject.toml whose requires-python this interpreter meets (where uv adds a requirement does not depend
    on it; the project's own Python may not be installed here)."""
    scratch = project.parent / f"{project.name}-uv-add"
    scratch.mkdir()
    here = f">={sys.version_info.major}.{sys.version_info.minor}"
    text = re.sub(
        r'^requires-python = "[^"]*"$',
        f'requires-python = "{here}"',
        (project / "pyproject.toml").read_text(),
        flags=re.M,
    )
    pyproject = scratch / "pyproject.toml"
    pyproject.write_text(text)
    before = text.splitlines(keepends=True)
    env = {**PROJECT_ENV, "UV_OFFLINE": "1"}
    for args in (["humanize"], ["--dev", "pytest-cov"]):  # humanize would sort among the template's
        run([UV, "add", "--frozen", "--python", sys.executable, *args], cwd=scratch, env=env)
    expected = list(before)
    for comment, line in (
        ("end here: `uv add --dev`", '    "pytest-cov",\n'),
        ("end here: `uv add`", '    "humanize",\n'),
    ):
        (at,) = [i for i, text in enumerate(before) if text.lstrip().startswith("#") and comment in text]
        expected.insert(at + 1, line)
    assert pyproject.read_text().splitlines(keepends=True) == expected


@pytest.mark.parametrize("database", ["postgresql", "mysql"])
def test_development_ports_are_settings_away_from_local_servers(database: str, render: Callable[..., Path]) -> None:
    """The override publishes the compose database and Redis on DB_HOST_PORT / REDIS_HOST_PORT
    (not 5432/3306/6379, which a local server holds), .env points there, and the README gives the
    sequence for the compose database and for one's own server."""
    import yaml

    root = render(database=database, redis=True)
    standard = {"postgresql": 5432, "mysql": 3306}[database]
    override = yaml.safe_load((root / "compose.override.yaml").read_text())
    assert override["services"]["db"]["ports"] == [f"127.0.0.1:${{DB_HOST_PORT:-{standard + 50000}}}:{standard}"]
    assert override["services"]["redis"]["ports"] == ["127.0.0.1:${REDIS_HOST_PORT:-56379}:6379"]
    example = dict(
        line.split("=", 1)
        for line in (root / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert example["DB_HOST_PORT"] == str(standard + 50000)
    assert f"@localhost:{standard + 50000}/" in example["DATABASE_URL"]
    assert example["REDIS_URL"] == "redis://localhost:56379/0"
    assert example["ENVIRONMENT"] == "development"
    readme = (root / "README.md").read_text()
    assert readme.index("docker compose up -d db") < readme.index("uv run alembic upgrade head")
    own = "createuser" if database == "postgresql" else "CREATE USER"
    assert own in readme and f"localhost:{standard}" in readme, "the own-server sequence is missing"
    # The image runs as production unless told otherwise; only the override opts into development.
    assert "ENVIRONMENT=production" in (root / "Dockerfile").read_text()
    assert override["services"]["app"]["environment"]["ENVIRONMENT"] == "development"
