"""`copier update` from a release that shipped `railway.json` to this one (`.railway/railway.ts`).

The fixture builds a git repository of the template with two tagged releases, as
tests/test_update.py does: 0.1.0 is the working tree with `.railway/` taken out and the
`railway.json` template put back as it shipped (tests/releases/railway.json.jinja); 0.2.0 is the
working tree as it is. A project generated from 0.1.0 and committed is updated to 0.2.0: the old
file goes, `.railway/railway.ts` comes, Railway's migration steps are printed, and a user's own
edits to `railway.json` are shown, not silently dropped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import render_template
from tasks_support import MARKER_RE, copier, git, release_repo, sh, show, tag_release

HERE = Path(__file__).resolve().parent
RAILWAY_DIR = "{% if 'railway' in platforms %}.railway{% endif %}"
LEGACY = "{% if 'railway' in platforms %}railway.json{% endif %}.jinja"
pytestmark = pytest.mark.xdist_group("update-railway")


@pytest.fixture(scope="module")
def releases(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = release_repo(template_src, tmp_path_factory.mktemp("railway-releases") / "fastapi-deploy")
    shutil.rmtree(repo / "template" / RAILWAY_DIR)
    shutil.copy(HERE / "releases" / "railway.json.jinja", repo / "template" / LEGACY)
    tag_release(repo, "0.1.0", "Release 0.1.0: railway.json")
    (repo / "template" / LEGACY).unlink()
    shutil.copytree(template_src / "template" / RAILWAY_DIR, repo / "template" / RAILWAY_DIR)
    return tag_release(repo, "0.2.0", "Release 0.2.0: .railway/railway.ts")


def _generated_at_010(releases: Path, project: Path, edit: bool) -> None:
    copied = copier("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "0.1.0", releases, project)
    assert copied.returncode == 0, show(copied)
    legacy = project / "railway.json"
    assert json.loads(legacy.read_text())["deploy"]["healthcheckPath"] == "/health/ready"
    assert not (project / ".railway").exists()
    if edit:  # the user tuned production and added watch patterns
        config = json.loads(legacy.read_text())
        config["build"]["watchPatterns"] = ["src/**", "Dockerfile"]
        config["environments"]["production"]["deploy"]["numReplicas"] = 4
        legacy.write_text(json.dumps(config, indent=2) + "\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated from 0.1.0" + (", railway.json tuned" if edit else ""))


@pytest.mark.slow
@pytest.mark.parametrize("edit", [False, True], ids=["unchanged", "edited"])
def test_update_from_railway_json_release(releases: Path, tmp_path: Path, edit: bool) -> None:
    project = tmp_path / "my-service"
    _generated_at_010(releases, project, edit)
    updated = copier("update", "--defaults", "--trust", "--skip-answered", "--vcs-ref", "0.2.0", cwd=project)
    assert updated.returncode == 0, show(updated)
    output = updated.stdout + updated.stderr

    assert not (project / "railway.json").exists()
    fresh = render_template(releases, tmp_path / "fresh" / "my-service")  # 0.2.0, the same answers
    for name in ("railway.ts", "package.json", "tsconfig.json"):
        assert (project / ".railway" / name).read_text() == (fresh / ".railway" / name).read_text()
    assert "[fastapi-deploy railway-iac] removed railway.json" in output, output
    for step in ("clear the config file path", "railway config plan", "scripts/deploy.sh railway staging"):
        assert step in output, f"the Railway-side step {step!r} is not printed"
    if edit:
        assert "which had edits of yours" in output and "git show HEAD:railway.json" in output
        assert '+    "watchPatterns": [' in output and '+        "numReplicas": 4' in output, output
        shown = git(project, "show", "HEAD:railway.json")
        assert json.loads(shown)["environments"]["production"]["deploy"]["numReplicas"] == 4
    else:
        assert "as release 0.1.0 shipped it" in output
    # No conflict left anywhere.
    assert sh(["git", "ls-files", "--unmerged"], cwd=project).stdout == ""
    assert not list(project.rglob("*.rej"))
    markers = {
        path.relative_to(project).as_posix(): MARKER_RE.findall(path.read_bytes())
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }
    fresh_markers = {
        name: MARKER_RE.findall((fresh / name).read_bytes()) if (fresh / name).is_file() else [] for name in markers
    }
    assert {n: m for n, m in markers.items() if len(m) > len(fresh_markers[n])} == {}, "conflict markers appeared"
