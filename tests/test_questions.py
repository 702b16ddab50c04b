"""copier.yml reads like a form, every answer renders, and impossible answers are refused
before anything is written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, render_template

COPIER_YML = yaml.safe_load((ROOT / "copier.yml").read_text())
QUESTIONS = {name: spec for name, spec in COPIER_YML.items() if not name.startswith("_")}
FREE_TEXT = {name for name, spec in QUESTIONS.items() if spec["type"] == "str" and "choices" not in spec}


def _choices(spec: dict[str, Any]) -> list[Any]:
    choices = spec.get("choices")
    if choices is None:
        return [True, False] if spec["type"] == "bool" else []
    return list(choices.values()) if isinstance(choices, dict) else list(choices)


# Answers a choice needs so that it is not refused for another reason.
COMPANIONS: dict[tuple[str, Any], dict[str, Any]] = {
    ("worker", "arq"): {"redis": True},
    ("worker", "celery"): {"redis": True},
    ("do_region", None): {"platforms": ["digitalocean"]},
}
EVERY_CHOICE = [
    (name, choice) for name, spec in QUESTIONS.items() for choice in _choices(spec) if not spec.get("multiselect")
]


@pytest.mark.parametrize("name", sorted(QUESTIONS))
def test_every_question_reads_like_a_form(name: str) -> None:
    spec = QUESTIONS[name]
    assert spec.get("help"), f"{name} has no help"
    assert "type" in spec, f"{name} has no type"
    assert "default" in spec, f"{name} has no default"
    if name in FREE_TEXT:
        assert spec.get("validator"), f"free-text question {name} has no validator"
    if "choices" in spec and not spec.get("multiselect"):
        assert spec["default"] in _choices(spec), f"{name}'s default is not one of its choices"


def test_no_question_asks_for_a_secret() -> None:
    for name, spec in QUESTIONS.items():
        assert not spec.get("secret"), name
        assert not any(word in name for word in ("password", "secret", "token", "key")), name


@pytest.mark.parametrize(("name", "choice"), EVERY_CHOICE, ids=[f"{n}={c}" for n, c in EVERY_CHOICE])
def test_every_choice_renders(name: str, choice: Any, render: Callable[..., Path]) -> None:
    answers = {name: choice, **COMPANIONS.get((name, choice), COMPANIONS.get((name, None), {}))}
    project = render(**answers)
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert recorded[name] == choice
    assert (project / "pyproject.toml").is_file()


@pytest.mark.parametrize("platform", _choices(QUESTIONS["platforms"]))
def test_every_platform_renders(platform: str, render: Callable[..., Path]) -> None:
    project = render(platforms=[platform])
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["platforms"] == [platform]


def test_all_platforms_at_once(render: Callable[..., Path]) -> None:
    everything = _choices(QUESTIONS["platforms"])
    project = render(platforms=everything)
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["platforms"] == everything


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"database": "sqlite", "platforms": ["digitalocean"]}, "platforms", "SQLite cannot run on digitalocean"),
    ({"database": "sqlite", "platforms": ["aws_ecs"]}, "platforms", "SQLite cannot run on aws_ecs"),
    ({"database": "sqlite", "platforms": ["kubernetes"]}, "platforms", "SQLite cannot run on kubernetes"),
    ({"database": "sqlite", "platforms": ["aws_eb"]}, "platforms", "SQLite cannot run on aws_eb"),
    ({"database": "sqlite", "platforms": ["railway", "aws_eb"]}, "platforms", "replaces them on every deploy"),
    (
        {"database": "sqlite", "platforms": ["vm", "aws_ecs", "kubernetes"]},
        "platforms",
        "SQLite cannot run on aws_ecs, kubernetes",
    ),
    # App Platform's image sources are GHCR, Docker Hub and DOCR (its spec's registry_type):
    # GitLab CI pushes to GitLab's registry, which no DigitalOcean deploy could pull.
    ({"platforms": ["digitalocean"], "ci": "gitlab"}, "ci", "pulls images only from GHCR, Docker Hub"),
    ({"platforms": ["railway", "digitalocean"], "ci": "gitlab"}, "ci", "Choose GitHub Actions (ci=github)"),
    ({"worker": "arq"}, "worker", 'worker "arq" needs Redis'),
    ({"worker": "celery", "redis": False}, "worker", 'worker "celery" needs Redis'),
    ({"project_name": "   "}, "project_name", "project_name is empty"),
    ({"project_slug": "My_Service"}, "project_slug", "is not kebab-case"),
    ({"package_name": "class"}, "package_name", "is not a valid Python package name"),
    ({"package_name": "my-service"}, "package_name", "is not a valid Python package name"),
    ({"author_email": "nobody"}, "author_email", "is not an email address"),
    ({"description": "two\nlines"}, "description", "must fit on one line"),
    ({"domain": "https://api.example.com"}, "domain", "is not a hostname"),
    ({"cors_origins": "https://ok.example.com,*"}, "cors_origins", '"*"'),
    ({"platforms": ["aws_ecs"], "aws_region": "virginia"}, "aws_region", "is not an AWS region code"),
    ({"platforms": ["aws_eb"], "aws_region": "virginia"}, "aws_region", "is not an AWS region code"),
    ({"python_version": "3.9"}, "python_version", "3.9"),
    ({"platforms": ["heroku"]}, "platforms", "heroku"),
]


@pytest.mark.parametrize(("answers", "question", "message"), REFUSED, ids=[r[1] + ":" + r[2][:30] for r in REFUSED])
def test_refused_answers_name_the_problem_and_write_nothing(
    answers: dict[str, Any], question: str, message: str, template_src: Path, tmp_path: Path
) -> None:
    assert_refused(template_src, tmp_path / "refused", answers, question, message)


def assert_refused(template_src: Path, dest: Path, answers: dict[str, Any], question: str, message: str) -> None:
    """Rendering answers is refused with a message naming the question and the problem (never a
    KeyError from derive()), and nothing is written at dest."""
    with pytest.raises(ValueError) as excinfo:
        render_template(template_src, dest, **answers)
    assert question in str(excinfo.value)
    assert message in str(excinfo.value)
    assert "KeyError" not in repr(excinfo.value)
    assert not dest.exists(), "a refused answer must leave no directory behind"


def test_cli_refusal_exits_non_zero_and_leaves_no_directory(template_src: Path, tmp_path: Path) -> None:
    dest = tmp_path / "cli-refused"
    result = subprocess.run(
        [
            sys.executable, "-m", "copier", "copy", "--trust", "--defaults",
            "--data", "database=sqlite", "--data", "platforms=[aws_ecs]",
            str(template_src), str(dest),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SQLite cannot run on aws_ecs" in result.stderr
    assert "Choose PostgreSQL or MySQL" in result.stderr
    assert not dest.exists()


def test_derived_defaults_follow_the_name(render: Callable[..., Path]) -> None:
    project = render(project_name="Orders API")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "orders-api"
    assert answers["package_name"] == "orders_api"
    assert (project / "src" / "orders_api" / "main.py").is_file()
