"""mypy --strict, as the generated pyproject.toml configures it, passes on every answer set of
the render matrix: the generated code is typed, not just linted.

One environment per test worker holds the requirements of every project it checks (installed
as each project needs them; uv makes the repeat installs no-ops) and one mypy cache, so a
project costs about a second once the first has warmed the cache of its Python version.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from combinations import pairwise, to_answers
from conftest import PROJECT_ENV, UV, run

ROWS = [to_answers(row) for row in pairwise()]
pytestmark = pytest.mark.slow  # installs the projects' requirements, runs mypy 30-odd times


@pytest.fixture(scope="module")
def typing_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment for the projects' requirements, and a mypy cache beside it."""
    root = tmp_path_factory.mktemp("types")
    run([UV, "venv", "--quiet", str(root / "venv")], cwd=root)
    return root


@pytest.mark.parametrize("answers", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_generated_code_passes_mypy_strict(
    answers: dict[str, Any], render: Callable[..., Path], typing_env: Path
) -> None:
    project = render(**answers)
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["tool"]["mypy"]["strict"] is True
    python = typing_env / "venv" / "bin" / "python"
    requirements = [*data["project"]["dependencies"], *data["dependency-groups"]["dev"]]
    run([UV, "pip", "install", "--quiet", "--python", str(python), *requirements], cwd=project)
    # The project's own configuration ([tool.mypy]: files, strict, pydantic plugin), its Python.
    result = run(
        [str(python), "-m", "mypy", "--python-executable", str(python), "--cache-dir", str(typing_env / "cache")],
        cwd=project,
        env={**PROJECT_ENV, "MYPY_FORCE_COLOR": "0"},
        check=False,
    )
    assert result.returncode == 0, f"{answers}\n{result.stdout[-6000:]}{result.stderr[-2000:]}"
    assert "Success: no issues found" in result.stdout
