"""No answer can break, or inject into, the generated project (issue 12).

- Every free-text answer reaches a file through a format filter (a grep of template/ and includes/).
- Hostile strings, drawn by hypothesis for each free-text answer, are either refused before
  anything is written, or give a project that parses in every format it holds, passes ruff, and
  never runs a command embedded in the answer when its scripts run with --help.
- The defects the issue reproduced, one test each.
- A failed task makes the copy say so: a summary of every step, no finished-looking commit, and a
  non-zero exit under `make new`.

The hypothesis test prints its counts (strings drawn, refused, accepted-and-valid,
accepted-and-broken); see them with
`.venv/bin/pytest tests/test_answers.py -n 0 -s -k hostile`.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, ROOT, need, render_template, run
from conftest import UV as UV_BIN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tasks_support import copier, sh, show, task_env
from test_questions import assert_refused

# The answers a user types freely (the others are choices or booleans).
FREE_TEXT = [
    "project_name",
    "project_slug",
    "package_name",
    "description",
    "author_name",
    "author_email",
    "domain",
    "cors_origins",
    "aws_region",
]
# Values derived from free text that templates print too.
DERIVED_TEXT = ["cors_origin_list", r"\w+\.domain"]
FORMAT_FILTERS = {
    "comment", "line", "token", "md_text", "yaml_str", "json_str", "toml_str", "py_str",
    "py_docstring", "dockerfile_str", "env_value", "sh_word", "tojson",
}  # fmt: skip
# Answers validated to [a-z0-9_-] starting with a letter, never a YAML word: safe bare everywhere.
IDENTIFIERS = {"project_slug", "package_name", "image_name"}
EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
EVERYTHING = {
    "platforms": ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"],
    "database": "postgresql",
    "redis": True,
    "worker": "arq",
    "reverse_proxy": "traefik",
    "ci": "github",
    "domain": "api.example.com",
    "cors_origins": "https://app.example.com",
}
SENTINEL = "fd-sentinel"


def _template_files() -> list[Path]:
    files = [p for base in ("template", "includes") for p in (ROOT / base).rglob("*.jinja")]
    return sorted(files)


def _raw_uses(text: str) -> list[str]:
    """Expressions that print a free-text answer without a format filter applied to it."""
    names = [n for n in FREE_TEXT if n not in IDENTIFIERS] + DERIVED_TEXT
    pattern = re.compile(r"(?<![\w.])(" + "|".join(names) + r")\b")
    raw = []
    for match in EXPRESSION.finditer(text):
        expression = match.group(1)
        if not pattern.search(expression):
            continue
        filters = set(re.findall(r"\|\s*(\w+)", expression))
        if not filters & FORMAT_FILTERS:
            raw.append(match.group(0))
    return raw


def test_every_free_text_answer_reaches_a_file_through_a_format_filter() -> None:
    problems = []
    for path in _template_files():
        for use in _raw_uses(path.read_text()):
            problems.append(f"{path.relative_to(ROOT)}: {use}")
    assert not problems, "raw free-text answers in the templates:\n" + "\n".join(problems)
    # The grep finds what it is meant to find.
    assert _raw_uses("name: {{ project_name }}") == ["{{ project_name }}"]
    assert _raw_uses("rule: {{ ('Host(' ~ e.domain ~ ')') }}") != []
    assert _raw_uses("name: {{ project_name | yaml_str }}") == []


# ---------------------------------------------------------------------------------------------
# Hostile strings
# ---------------------------------------------------------------------------------------------
HOSTILE_PIECES = [
    "\n", "\r", "\t", "\x00", "\x7f", "\u2028", "\u2029", "\u200b", "\u202e", "\ufeff", "\x85",
    '"', "'", '"""', "\\", "\\N{x}", "\\n", "$(touch fd-sentinel)", "`touch fd-sentinel`",
    "; touch fd-sentinel #", "\ntouch fd-sentinel #", "${HOME}", "$HOME", "{{ 7*7 }}", "{% if %}",
    "{#", "yes", "null", "~", "- ", ": ", "#", "&a", "*a", "!!python/object", "%", "@", "\u00e9",
    "\u0430", "\u2013", "\U0001f600", " ", "<b>", "*x*", "]", "[", ",", "=", "http://A.B", ":99999",
]  # fmt: skip
LONGEST = {"project_name": 60, "description": 200, "author_name": 100, "project_slug": 40}
REFUSED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
PRINTABLE_PIECES = [
    p for p in HOSTILE_PIECES if not any(c in p for c in "\n\r\t\x00\x7f\x85\u2028\u2029\u200b\u202e\ufeff")
]


def hostile_text(field: str) -> st.SearchStrategy[str]:
    """Strings an attacker or a careless user types: half printable (so many are accepted)."""
    printable = st.text(st.characters(exclude_categories=REFUSED_CATEGORIES), min_size=1, max_size=6)
    words = st.sampled_from(["Orders", "api", "x", "service", " "])
    tricky = st.lists(st.sampled_from(PRINTABLE_PIECES) | printable | words, min_size=1, max_size=8)
    anything = st.lists(
        st.sampled_from(HOSTILE_PIECES) | st.text(min_size=1, max_size=6) | words, min_size=1, max_size=8
    )
    longest = LONGEST.get(field, 60)
    long_one = st.integers(longest - 3, longest).map(lambda n: ('Ab "c" \\ $(x) ' * 40)[:n].strip())
    return st.one_of(
        tricky.map("".join).map(str.strip),
        tricky.map("".join),
        anything.map("".join),
        long_one,
        st.sampled_from(HOSTILE_PIECES),
    )


# The display texts accept the most, so they are drawn most often.
FIELDS = ["project_name"] * 3 + ["description"] * 3 + ["author_name"] * 2 + FREE_TEXT
CASES = st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f), hostile_text(f)))
COUNTS: Counter[str] = Counter()


class _TaggedLoader(yaml.SafeLoader):
    """Safe YAML that accepts CloudFormation's local tags (!Ref, !Sub)."""


_TaggedLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def broken_formats(project: Path) -> list[str]:
    """Every way the rendered project fails to parse or lint (empty when it is sound)."""
    problems: list[str] = []
    for path in sorted(p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts):
        rel = path.relative_to(project)
        if SENTINEL in str(rel) or any(c in str(rel) for c in "\n\r\t\"'$`"):
            problems.append(f"suspicious path {rel!r}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in (".yml", ".yaml"):
                list(yaml.load_all(text, Loader=_TaggedLoader))
            elif path.suffix == ".json":
                json.loads(text)
            elif path.suffix == ".toml":
                tomllib.loads(text)
            elif path.suffix == ".py":
                ast.parse(text)
        except Exception as exc:
            problems.append(f"{rel}: {type(exc).__name__}: {str(exc)[:200]}")
        if path.suffix == ".sh":
            checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            if checked.returncode:
                problems.append(f"{rel}: bash -n: {checked.stderr[:200]}")
    for command in (
        ["hadolint", "--no-fail", "Dockerfile"],
        ["ruff", "check", "--no-cache", "-q", "."],
        ["ruff", "format", "--check", "--no-cache", "-q", "."],
    ):
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)
        if done.returncode or (command[0] == "hadolint" and done.stderr):
            problems.append(f"{' '.join(command)}: {(done.stdout + done.stderr)[:600]}")
    for script in sorted(project.rglob("*.sh")):
        subprocess.run([str(script), "--help"], cwd=project, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    if (project / SENTINEL).exists() or list(project.rglob(SENTINEL)):
        problems.append("a command embedded in an answer ran")
    return problems


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("FD_HOSTILE_EXAMPLES", "45")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=CASES)
def test_hostile_answers_are_refused_or_render_a_sound_project(template_src: Path, case: tuple[str, str]) -> None:
    need(shutil.which("hadolint") is not None, "hadolint (the template's dev tools) is needed")
    field, value = case
    answers = {**EVERYTHING, field: value}
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "project"
        COUNTS["drawn"] += 1
        try:
            render_template(template_src, dest, **answers)
        except ValueError as refused:
            COUNTS["refused"] += 1
            assert not dest.exists(), f"{field}={value!r} was refused but left {dest}"
            # Copier names the question; a name that slugifies to nothing is refused as project_slug.
            assert "Validation error for question '" in str(refused) or "Invalid choice" in str(refused), str(refused)
            return
        problems = broken_formats(dest)
        COUNTS["accepted-and-broken" if problems else "accepted-and-valid"] += 1
        assert not problems, f"{field}={value!r} broke the project:\n" + "\n".join(problems)


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> Any:
    yield
    if COUNTS:
        print(
            f"\nhostile answers: {COUNTS['drawn']} drawn, {COUNTS['refused']} refused, "
            f"{COUNTS['accepted-and-valid']} accepted-and-valid, "
            f"{COUNTS['accepted-and-broken']} accepted-and-broken"
        )


# ---------------------------------------------------------------------------------------------
# The defects of issue 12, one each
# ---------------------------------------------------------------------------------------------
REFUSED = [
    ({"project_name": "Svc\ntouch /tmp/x #"}, "project_name", "control or invisible characters (U+000A)"),
    ({"project_name": "Svc\rtouch /tmp/x #"}, "project_name", "U+000D"),
    ({"description": "ok\u2028touch x"}, "description", "U+2028"),
    ({"author_name": "A\x00B"}, "author_name", "U+0000"),
    ({"project_slug": "my-service\n"}, "project_slug", "is not kebab-case"),
    ({"package_name": "my_service\n"}, "package_name", "is not a valid Python package name"),
    ({"author_email": "dev@example.com\n"}, "author_email", "control or invisible"),
    ({"domain": "api.example.com\n"}, "domain", "control or invisible"),
    ({"platforms": ["aws_ecs"], "aws_region": "us-east-1\n"}, "aws_region", "control or invisible"),
    ({"project_name": "Svc\\"}, "project_name", "backslash"),
    ({"package_name": "json"}, "package_name", 'choose another name, for example "json_service"'),
    ({"package_name": "fastapi"}, "package_name", "one of the project's dependencies"),
    ({"package_name": "sqlalchemy"}, "package_name", "dependencies"),
    ({"package_name": "typing"}, "package_name", "standard-library"),
    ({"package_name": "tests"}, "package_name", "test package"),
    ({"project_slug": "fastapi"}, "project_slug", 'for example "fastapi-service"'),
    ({"project_slug": "pydantic-settings"}, "project_slug", "dependencies"),
    ({"project_slug": "test"}, "project_slug", "test package"),
    ({"project_slug": "null"}, "project_slug", "YAML boolean or null"),
    ({"package_name": "yes"}, "package_name", "YAML boolean or null"),
    ({"project_slug": "on"}, "project_slug", "YAML boolean or null"),
    ({"domain": "API.Example.com"}, "domain", '"api.example.com"'),
    ({"cors_origins": "https://a.example.com:70000"}, "cors_origins", '"https://a.example.com:70000"'),
    ({"cors_origins": "https://a.example.com,\nhttps://b.example.com"}, "cors_origins", "U+000A"),
    ({"cors_origins": "https://a.example.com\n,https://b.example.com"}, "cors_origins", "U+000A"),
    ({"database": "oracle"}, "database", "oracle"),
]


@pytest.mark.parametrize(
    ("answers", "question", "message"), REFUSED, ids=[f"{r[1]}={r[0][r[1]]!r}"[:50] for r in REFUSED]
)
def test_issue_12_answers_are_refused_with_the_field_and_the_fix(
    answers: dict[str, Any], question: str, message: str, template_src: Path, tmp_path: Path
) -> None:
    assert_refused(template_src, tmp_path / "refused", answers, question, message)


def test_invalid_choice_on_the_command_line_is_a_message_not_a_traceback(template_src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "oracle"
    result = copier("copy", "--trust", "--defaults", "--data", "database=oracle", template_src, dest)
    assert result.returncode != 0
    # Copier's own refusal, with the choices; never derive()'s KeyError.
    assert "KeyError" not in result.stderr and "context.py" not in result.stderr, show(result)
    assert (
        "Invalid choice for 'database': 'oracle' is not in ['postgresql', 'mysql', 'sqlite', 'none']" in result.stderr
    )
    assert not dest.exists()


def test_quotes_backslashes_and_long_names_give_a_project_that_parses_and_lints(render: Callable[..., Path]) -> None:
    project = render(
        **EVERYTHING,
        project_name='Inventory "Management" API \\ caf\u00e9',
        description='Tracks """stock""" and \\N{x} \u2013 ' + "word " * 30 + "end",
        author_name='O\'Brien \\ "Ops"',
        author_email="o'brien@example.com",
        project_slug="inventory-management-api-for-warehouses",
    )
    assert broken_formats(project) == []
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["authors"] == [{"name": 'O\'Brien \\ "Ops"', "email": "o'brien@example.com"}]
    assert pyproject["project"]["description"].startswith('Tracks """stock""" and \\N{x} \u2013 word')
    package = project / "src" / "inventory_management_api_for_warehouses"
    assert ast.get_docstring(ast.parse((package / "__init__.py").read_text())).startswith(
        'Inventory "Management" API \\ caf\u00e9: Tracks'
    )
    main = ast.parse((package / "main.py").read_text())
    title = next(k.value.value for k in ast.walk(main) if isinstance(k, ast.keyword) and k.arg == "title")
    assert title == 'Inventory "Management" API \\ caf\u00e9'


def test_uppercase_cors_origins_reach_the_deploy_files_in_lowercase(render: Callable[..., Path]) -> None:
    project = render(**{**EVERYTHING, "cors_origins": "HTTPS://App.Example.com, http://LOCALHOST:3000"})
    wanted = "https://app.example.com,http://localhost:3000"
    assert f"CORS_ORIGINS={wanted}\n" in (project / ".env.example").read_text()
    base = yaml.safe_load((project / "deploy/k8s/base/kustomization.yaml").read_text())
    literals = [item for gen in base.get("configMapGenerator", []) for item in gen.get("literals", [])]
    assert f"CORS_ORIGINS={wanted}" in literals


def test_yaml_words_and_reserved_slugs_never_reach_a_file_unquoted() -> None:
    """The filters quote every YAML word; the validators refuse them as names (above)."""
    sys.path.insert(0, str(ROOT / "extensions"))
    import filters

    for word in ["yes", "No", "ON", "off", "null", "~", "true", "False", "y", "N"]:
        assert yaml.safe_load(f"key: {filters.yaml_str(word)}") == {"key": word}
        assert filters.name_error(word.lower(), "project_slug"), word


@pytest.mark.slow
def test_a_tampered_answers_file_does_not_inject_on_recopy(template_src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "tampered"
    render_template(template_src, dest, database="none", platforms=["railway", "vm"])
    answers_file = dest / ".copier-answers.yml"
    answers = yaml.safe_load(answers_file.read_text())
    answers["project_name"] = f"Svc\ntouch {SENTINEL} #"
    answers["description"] = 'x"\nRUN touch fd-sentinel'
    answers_file.write_text(yaml.safe_dump(answers))
    run(["git", "init", "-q"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"], cwd=dest)
    result = copier("recopy", "--trust", "--defaults", "--overwrite", "--skip-tasks", cwd=dest)
    assert result.returncode == 0, show(result)
    recorded = yaml.safe_load(answers_file.read_text())
    assert "\n" not in recorded["project_name"] and "\n" not in recorded["description"]
    assert broken_formats(dest) == []
    assert "touch" not in (dest / "scripts" / "deploy.sh").read_text()
    assert "touch" not in (dest / "Dockerfile").read_text()


# ---------------------------------------------------------------------------------------------
# A failed copy never says it is ready
# ---------------------------------------------------------------------------------------------
def _broken_uv(tmp_path: Path) -> dict[str, str]:
    """A PATH whose uv is a shim that fails, as a pyenv shim for another Python does."""
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    shim = shim_dir / "uv"
    shim.write_text('#!/bin/sh\necho "pyenv: uv: command not found" >&2\nexit 127\n')
    shim.chmod(0o755)
    env = task_env()
    env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    env["PYENV_VERSION"] = "3.99"  # what a pyenv shim exports; the tasks must not pass it on
    return env


@pytest.mark.slow
def test_a_broken_uv_gives_a_summary_no_commit_and_a_not_ready_message(template_src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "broken-uv"
    result = copier(
        "copy", "--trust", "--defaults", "--data", "database=sqlite", template_src, dest, env=_broken_uv(tmp_path)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, show(result)  # Copier would delete the project otherwise
    summary = output[output.index("[fastapi-deploy all] summary:") :]
    assert re.search(r"^  FAILED   lock\b", summary, re.M), show(result)
    assert re.search(r"^  ok       secrets\b", summary, re.M), show(result)
    assert re.search(r"^  skipped  git\b", summary, re.M), show(result)
    assert "re-run: cd " in summary and "run.py lock" in summary
    assert "NOT READY" in summary
    assert "is ready in" not in output and "is NOT ready in" in output, show(result)
    assert sh(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=dest).returncode != 0, "no commit after a failure"
    assert (dest / "pyproject.toml").is_file(), "the generated files stay"


@pytest.mark.slow
def test_make_new_exits_non_zero_when_a_step_failed(template_src: Path, tmp_path: Path) -> None:
    need(shutil.which("make") is not None, "make is needed")
    # `uv run` puts the template's own uv first on PATH, so here the lock step fails on a package
    # index that refuses connections instead of on the shim.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/simple"
    env = task_env(UV_DEFAULT_INDEX=refused, UV_NO_CACHE="1", UV_PROJECT_ENVIRONMENT=str(ROOT / ".venv"), UV_FROZEN="1")
    work = tmp_path / "template"
    shutil.copytree(template_src, work)
    run(["git", "init", "-q"], cwd=work)
    run(["git", "add", "-A"], cwd=work)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "t"], cwd=work)
    dest = tmp_path / "made"
    # -o setup: the template's environment is this one (UV_PROJECT_ENVIRONMENT), already synced;
    # UV_FROZEN: `uv run` takes that environment as locked and never asks the index (the tasks
    # drop both variables, as they do every setting of the template's own environment).
    make = ["make", "-C", str(work), "-o", "setup", "new", f"DEST={dest}", f"UV={BIN / 'uv'}"]
    result = sh(make, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, show(result)
    assert re.search(r"^  FAILED   lock\b", output, re.M), show(result)
    assert re.search(r"^  skipped  git\b", output, re.M), show(result)
    assert "is ready in" not in output
    assert (dest / "pyproject.toml").is_file()


def test_the_status_file_has_one_formula() -> None:
    sys.path.insert(0, str(ROOT / "extensions"))
    sys.path.insert(0, str(ROOT / "tasks"))
    import common
    import filters

    here = Path.cwd()
    assert common.status_path(here) == filters.status_path(here)
    common.write_status(here, ["lock"])
    assert filters.failed_steps(here) == ["lock"]
    assert filters.failed_steps(here) is None, "read once"


@pytest.mark.parametrize(
    "answers",
    [
        {
            "database": "postgresql",
            "server": "gunicorn",
            "redis": True,
            "worker": "arq",
            "sentry": True,
            "metrics": True,
        },
        {"database": "mysql", "redis": True, "worker": "celery"},
    ],
    ids=["default-db-gunicorn-arq-sentry-metrics", "mysql-celery"],
)
def test_every_installed_name_of_a_full_project_is_refused_as_a_name(
    answers: dict[str, Any], project: Callable[..., Path]
) -> None:
    """The reserved list covers what the project really installs (import and distribution names)."""
    sys.path.insert(0, str(ROOT / "extensions"))
    import filters

    root = project(**answers)
    listing = (
        "import importlib.metadata as m, json; "
        "print(json.dumps([d.metadata['Name'] for d in m.distributions()] + list(m.packages_distributions())))"
    )
    names = json.loads(run([UV_BIN, "run", "--frozen", "python", "-c", listing], cwd=root).stdout)
    own = {"my-service", "my_service", "_virtualenv", "__editable__"}
    missing = sorted(
        # Names that no answer could be (mypyc's hashed helper modules start with a digit) aside.
        {n for n in names if n not in own and not n.startswith(("_", "__editable__")) and n[0].isalpha()}
        - {n for n in names if filters.reserved_reason(n)}
    )
    assert not missing, f"add to DEPENDENCY_NAMES in extensions/filters.py: {missing}"
