"""The session's render cache and Jinja compile memo (tests/render_cache.py) hand out exactly
what Copier renders on its own: the same files, bytes and executable bits as `copier copy` in a
fresh process (which has neither), and a caller's changes never reach a later caller."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import render_cache
import yaml
from conftest import render_template

EVERYTHING: dict[str, Any] = {
    "platforms": ["railway", "aws_ecs", "aws_eb", "kubernetes", "vm"],  # digitalocean: not with GitLab
    "database": "mysql",
    "redis": True,
    "worker": "celery",
    "reverse_proxy": "traefik",
    "ci": "gitlab",
    "sentry": True,
    "metrics": True,
    "domain": "api.example.com",
    "project_name": "Render Cache Check",
}


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """relative path -> (content, executable) for every file under root."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), os.access(p, os.X_OK))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copier_cli(template_src: Path, dest: Path, answers: dict[str, Any]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = dest.parent / f"{dest.name}-answers.yml"
    data.write_text(yaml.safe_dump(answers))
    cmd = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--skip-tasks", "--quiet"]
    subprocess.run([*cmd, "--data-file", str(data), str(template_src), str(dest)], check=True, timeout=300)
    return dest


@pytest.mark.parametrize(
    ("asked", "cli"),
    [
        (EVERYTHING, EVERYTHING),
        ({"ci": "github", "platforms": ["railway"], "database": "postgresql"}, {}),  # defaults spelled out
    ],
    ids=["everything", "explicit-defaults"],
)
def test_renders_are_what_copier_renders_in_a_fresh_process(
    template_src: Path, tmp_path: Path, asked: dict[str, Any], cli: dict[str, Any]
) -> None:
    first = render_template(template_src, tmp_path / "first" / "svc", **asked)
    (first / "README.md").write_text("changed by the first caller\n")
    (first / "extra.txt").write_text("added by the first caller\n")
    second = render_template(template_src, tmp_path / "second" / "svc", **asked)  # a copy, never the first's
    expected = tree(copier_cli(template_src, tmp_path / "cli" / "svc", cli))
    assert "extra.txt" not in expected and len(expected) > 50
    got = tree(second)
    assert sorted(got) == sorted(expected)
    assert [p for p in expected if got[p] != expected[p]] == []


def test_refusals_are_never_kept(template_src: Path, tmp_path: Path) -> None:
    for attempt in ("one", "two"):
        dest = tmp_path / attempt
        with pytest.raises(ValueError, match="project_slug"):
            render_template(template_src, dest, project_slug="on")
        assert not dest.exists()
    assert render_cache.answers_key({"project_slug": "on"}) is not None


def test_compiled_code_is_kept_per_environment_setting() -> None:
    """One source under two settings the compiler depends on gives each its own code."""
    import jinja2

    source = "{% if x %}\n  yes\n{% endif %}\n"
    plain = jinja2.Environment().from_string(source).render(x=True)
    trimmed = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(source).render(x=True)
    assert (plain, trimmed) == ("\n  yes\n", "  yes\n")
    assert jinja2.Environment().from_string(source).render(x=True) == plain  # a kept one, the same


def test_static_defaults_are_the_plain_ones_of_copier_yml(template_src: Path) -> None:
    defaults = render_cache.static_defaults(yaml.safe_load((template_src / "copier.yml").read_text()))
    assert defaults["ci"] == "github" and defaults["database"] == "postgresql"
    assert "project_slug" not in defaults and "package_name" not in defaults  # Jinja defaults
    assert "aws_region" not in defaults and "do_region" not in defaults  # asked only `when`
