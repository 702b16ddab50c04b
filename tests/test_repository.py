"""The template repository's own code meets the bar it sets for generated projects."""

from __future__ import annotations

from conftest import BIN, ROOT, run

PYTHON_DIRS = ["extensions", "tests", "benchmarks", "docs/hooks", "tasks"]


def test_own_python_is_ruff_clean() -> None:
    dirs = [d for d in PYTHON_DIRS if (ROOT / d).is_dir()]
    run([str(BIN / "ruff"), "check", "--no-cache", *dirs], cwd=ROOT)
    run([str(BIN / "ruff"), "format", "--check", "--no-cache", *dirs], cwd=ROOT)


def test_ci_entry_point_is_shellcheck_clean_and_runs_the_readme_command() -> None:
    run([str(BIN / "shellcheck"), ".ci/run"], cwd=ROOT)
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "\nmake test\n" in ci
    assert "FD_REQUIRE_ALL=1" in ci
