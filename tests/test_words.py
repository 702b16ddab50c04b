"""Words: what the generated files and the template's docs say reads right for every answer set.

`check_words(project)` runs on every rendered project of the pairwise matrix (from
test_render.py, which renders them anyway): no "an celery worker", no "tests against none" and
no "FastAPI on uvicorn, none" where the project has no database. Version numbers of Copier in
prose agree with `_min_copier_version`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import ROOT

# Case-sensitive: Python's None is not the answer "none".
NONE = r"none(?![\w-])"
BAD_PHRASES = {
    r"\ban (?i:celery)\b": "a Celery worker",
    r"\ba arq\b": "an arq worker",
    rf"\bagainst {NONE}": "no database: say nothing about one",
    rf", {NONE}": "no database: leave it out of the list",
    rf"\b[Aa] {NONE}|\b[Tt]he {NONE}|\bnone (?:database|server|service)\b": "no database: leave it out",
}
SKIP = {".copier-answers.yml"}  # the answers themselves say `database: none`
COPIER_VERSION_RE = re.compile(r"\b[Cc]opier\s*(?:>=|==|~=|v)?\s*(\d+\.\d+(?:\.\d+)?)")


def bad_phrases(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in SKIP or ".git" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, fix in BAD_PHRASES.items():
                if re.search(pattern, line):
                    problems.append(f"{path.relative_to(root)}:{number}: {line.strip()[:100]!r} ({fix})")
    return problems


def check_words(project: Path) -> None:
    problems = bad_phrases(project)
    assert not problems, "\n".join(problems)


def test_the_check_finds_each_bad_phrase(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "FastAPI on uvicorn, none, Redis, an celery worker.\n# Lint, tests against none, the image\n"
        "Python's None and a none-too-short line are fine.\n"
    )
    problems = bad_phrases(tmp_path)
    assert len(problems) == 3 and all(p.startswith("README.md:") for p in problems), problems
    assert [p.split(":")[1] for p in problems] == ["1", "1", "2"]


def _min_copier_version() -> str:
    return str(yaml.safe_load((ROOT / "copier.yml").read_text())["_min_copier_version"])


def test_copier_versions_in_prose_are_the_minimum() -> None:
    minimum = _min_copier_version()
    paths = sorted(
        {
            p
            for pattern in ("*.md", "docs/**/*.md", "copier.yml", "pyproject.toml", "template/**/*", "includes/**/*")
            for p in ROOT.glob(pattern)
            if p.is_file() and ".venv" not in p.parts
        }
    )
    assert any(p.name == "getting-started.md" for p in paths)
    wrong = [
        f"{path.relative_to(ROOT)}: {match.group(0)!r}"
        for path in paths
        for match in COPIER_VERSION_RE.finditer(path.read_text(encoding="utf-8", errors="replace"))
        if not minimum.startswith(match.group(1))
    ]
    assert not wrong, f"copier.yml's _min_copier_version is {minimum}, but: {wrong}"
