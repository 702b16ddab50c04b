"""The template repository stands alone: a clone has everything its tests read, its file names
check out on Windows and macOS, and its committed schema data is what its script makes.

- no code path (tests, benchmarks, tasks, extensions, Makefile, .ci, pyproject, ...) names a folder
  beside the repository;
- every path under template/ is legal on Windows (reserved characters and names, trailing dot or
  space) and distinct on a case-insensitive macOS file system, and has no `:`;
- tests/schemas/: the strict App Platform schema is the open one closed by the committed script,
  and the README names the source commit the files say they come from;
- a `git clone` of the committed HEAD into an empty folder, with nothing beside it, runs the fast
  tier and passes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml
from conftest import ROOT, run

# Built from pieces so that this file does not match its own patterns.
_SH = "sha" + "red"
OUTSIDE = [
    re.compile(r"\.\./" + _SH + r"\b"),
    re.compile(r"parent\s*/\s*['\"]" + _SH + r"['\"]"),
    re.compile(r"ROOT\.parent\b"),
    re.compile(r"(?<![\w./-])" + _SH + r"/[\w.-]+\.(md|json|ya?ml)\b"),
    re.compile(r"/work/" + _SH + r"\b"),
]
# Everything that runs or configures a run; template/ is the generated project, checked by its own tests.
CODE_PATHS = [
    "tests",
    "benchmarks",
    "tasks",
    "extensions",
    "includes",
    "docs",
    ".ci",
    ".github",
    "Makefile",
    "pyproject.toml",
    "copier.yml",
    "mkdocs.yml",
    "README.md",
]


def _files(*names: str) -> list[Path]:
    found: list[Path] = []
    for name in names:
        path = ROOT / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return found


def test_nothing_reads_outside_the_repository() -> None:
    hits = []
    for path in _files(*CODE_PATHS):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(pattern.search(line) for pattern in OUTSIDE):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == [], "the repository must stand alone (a clone has nothing beside it):\n" + "\n".join(hits)


# ---------------------------------------------------------------------------------------------
# Portable file names
# ---------------------------------------------------------------------------------------------
WINDOWS_RESERVED_CHARS = set('<>:"\\|?*') | {chr(c) for c in range(32)}
WINDOWS_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in "123456789"}


def portability_problems(paths: list[str]) -> list[str]:
    """What stops these relative POSIX paths from checking out on Windows or macOS."""
    problems = []
    for path in paths:
        for part in PurePosixPath(path).parts:
            bad = sorted(WINDOWS_RESERVED_CHARS & set(part))
            if bad:
                problems.append(f"{path}: {part!r} has {''.join(bad)!r}, which Windows (and `:` macOS) cannot hold")
            if part.split(".")[0].upper() in WINDOWS_RESERVED_NAMES:
                problems.append(f"{path}: {part!r} is a reserved device name on Windows")
            if part.endswith((".", " ")):
                problems.append(f"{path}: {part!r} ends with a dot or a space, which Windows drops")
    folded: dict[str, str] = {}
    for path in paths:
        for depth in range(1, len(PurePosixPath(path).parts) + 1):
            prefix = "/".join(PurePosixPath(path).parts[:depth])
            other = folded.setdefault(prefix.casefold(), prefix)
            if other != prefix:
                problems.append(f"{prefix} and {other} are one path on a case-insensitive file system (macOS, Windows)")
    return sorted(set(problems))


def test_portability_check_catches_each_rule() -> None:
    assert portability_problems(["a/b.txt", "a/c.txt", "d"]) == []
    for bad in ['{% if x == "y" %}z{% endif %}', "a:b", "CON", "aux.txt", "trail.", "space ", "q?"]:
        assert portability_problems([f"dir/{bad}"]) != [], bad
    assert portability_problems(["Readme.md", "README.md"]) != []
    assert portability_problems(["Src/a.py", "src/b.py"]) != []


def test_template_paths_are_portable() -> None:
    tracked = run(["git", "ls-files", "-z", "template"], cwd=ROOT).stdout.split("\0")
    on_disk = [p.relative_to(ROOT).as_posix() for p in (ROOT / "template").rglob("*")]
    paths = sorted({p for p in tracked + on_disk if p and "__pycache__" not in p})
    assert len(paths) > 50
    assert portability_problems(paths) == []


def test_every_tracked_path_is_portable() -> None:
    """A clone on Windows or macOS checks out the whole repository, not only template/."""
    tracked = [p for p in run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0") if p]
    assert portability_problems(tracked) == []


# ---------------------------------------------------------------------------------------------
# tests/schemas: derived from DigitalOcean's OpenAPI description by the committed script
# ---------------------------------------------------------------------------------------------
SCHEMAS = ROOT / "tests" / "schemas"


def _builder():  # the committed script, imported as a module
    spec = importlib.util.spec_from_file_location("build_do_schema", SCHEMAS / "build_do_schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_strict_app_spec_schema_is_the_open_one_closed_by_the_script() -> None:
    builder = _builder()
    open_text = (SCHEMAS / "do-app-spec.schema.json").read_text()
    strict_text = (SCHEMAS / "do-app-spec.strict.schema.json").read_text()
    open_schema = json.loads(open_text)
    assert builder.dump(open_schema) == open_text, "do-app-spec.schema.json is not the script's output: regenerate"
    assert builder.dump(builder.build_strict(open_schema)) == strict_text, (
        "do-app-spec.strict.schema.json differs from `build_do_schema.py --strict-only`"
    )
    commit = re.search(r"openapi/blob/([0-9a-f]{40})/", open_schema["$id"])
    assert commit, open_schema["$id"]
    readme = (SCHEMAS / "README.md").read_text()
    assert commit.group(1) in readme and "build_do_schema.py" in readme
    # Every object reachable in the strict file is closed where it is used.
    assert strict_text.count('"unevaluatedProperties": false') > 40


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("root", lambda s: s.update(nmae="x")),
        ("service", lambda s: s["services"][0].update(http_prot=8000)),
        ("health check", lambda s: s["services"][0]["health_check"].update(http_pth="/x")),
        ("env var", lambda s: s["services"][0]["envs"][0].update(secret=True)),
        ("github source", lambda s: s["services"][0]["github"].update(deploy_on_pusj=True)),
        ("ingress match", lambda s: s["ingress"]["rules"][0]["match"]["path"].update(prefx="/")),
        ("alert", lambda s: s["alerts"][0].update(rules="DEPLOYMENT_FAILED")),
        ("autoscaling metric", lambda s: s["services"][0]["autoscaling"]["metrics"]["cpu"].update(pct=1)),
        ("service cors (allOf)", lambda s: s["services"][0]["cors"].update(allow_origin=[])),
    ],
)
def test_strict_schema_rejects_a_misspelled_key_at_every_depth(where: str, change) -> None:
    import jsonschema

    strict = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "do-app-spec.strict.schema.json").read_text()))
    loose = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "do-app-spec.schema.json").read_text()))
    spec = {
        "name": "my-service",
        "region": "nyc",
        "alerts": [{"rule": "DEPLOYMENT_FAILED"}],
        "features": ["buildpack-stack=ubuntu-22"],
        "ingress": {"rules": [{"match": {"path": {"prefix": "/"}}, "component": {"name": "web"}}]},
        "services": [
            {
                "name": "web",
                "github": {"repo": "org/my-service", "branch": "main", "deploy_on_push": True},
                "dockerfile_path": "Dockerfile",
                "http_port": 8000,
                "instance_size_slug": "apps-d-1vcpu-1gb",
                "autoscaling": {"min_instance_count": 2, "max_instance_count": 4, "metrics": {"cpu": {"percent": 70}}},
                "health_check": {"http_path": "/health/ready"},
                "cors": {"allow_origins": [{"exact": "https://app.example.com"}]},
                "envs": [{"key": "ENVIRONMENT", "value": "production", "scope": "RUN_TIME"}],
            }
        ],
    }
    assert list(strict.iter_errors(spec)) == [], "the valid spec must pass before the change"
    change(spec)
    assert list(strict.iter_errors(spec)) != [], f"a misspelled key in the {where} passed the strict schema"
    assert list(loose.iter_errors(spec)) == [], "the open schema keeps DigitalOcean's open objects"


# ---------------------------------------------------------------------------------------------
# A clone with nothing beside it runs the fast tier
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_fresh_clone_with_nothing_beside_it_passes_the_fast_tier(tmp_path: Path) -> None:
    head = run(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip()
    empty = tmp_path / "empty"
    empty.mkdir()
    clone = empty / "fastapi-deploy"
    run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], cwd=empty)
    assert sorted(p.name for p in empty.iterdir()) == ["fastapi-deploy"], "the clone must have nothing beside it"
    assert run(["git", "rev-parse", "HEAD"], cwd=clone).stdout.strip() == head
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "UV_PROJECT"))}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the uv cache is the user's own (UV_CACHE_DIR passes through)
    result = subprocess.run(
        ["make", "test-fast", "PYTEST_ARGS=-p no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,  # a guard against a hang, not a speed target (8-15 min on a loaded 2-core machine)
    )
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    summary = re.search(r"=+ (\d+) passed(.*) in [\d.]+s", result.stdout)
    assert summary, tail
    assert int(summary.group(1)) > 100 and "failed" not in summary.group(2) and "error" not in summary.group(2), tail


# ---------------------------------------------------------------------------------------------
# Tiers: markers from what each test uses (tests/conftest.py), selected by the Makefile
# ---------------------------------------------------------------------------------------------
TIER_REPORT = """
def pytest_collection_finish(session):
    for item in session.items:
        print("TIER", item.nodeid, ",".join(sorted({m.name for m in item.iter_markers()})), sep="\\t")
"""


def test_tiers_select_by_what_each_test_needs(tmp_path: Path) -> None:
    (tmp_path / "tier_report.py").write_text(TIER_REPORT)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        "-p",
        "tier_report",
    ]
    out = run(cmd, cwd=ROOT, env=env).stdout
    marks = {}
    for line in out.splitlines():
        if line.startswith("TIER\t"):
            _, node, names = line.split("\t")
            marks[node] = set(names.split(","))

    def having(mark: str) -> set[str]:
        return {node for node, names in marks.items() if mark in names}

    assert len(marks) > 300
    fast, heavy = (
        having("fast"),
        {n for n, m in marks.items() if m & {"slow", "container", "postgres", "mysql", "redis"}},
    )
    assert fast | heavy == set(marks) and not fast & heavy, "every test is in the fast tier or needs something"
    files = {node.split("::")[0] for node in fast}
    for tier_file in ("test_repository", "test_questions", "test_render", "test_extensions", "test_platforms"):
        assert f"tests/{tier_file}.py" in files, tier_file
    for slow_file in ("test_generated_app", "test_update", "test_tasks", "test_proxy"):
        assert f"tests/{slow_file}.py" not in files, slow_file
    assert not any("test_image_migrates" in node or "test_sigterm" in node for node in fast)
    postgres, mysql = having("postgres"), having("mysql")
    assert "tests/test_generated_app.py::test_migrations_up_check_down_up[postgresql]" in postgres
    assert "tests/test_generated_app.py::test_migrations_up_check_down_up[mysql]" in mysql
    assert not any(node.endswith("[sqlite]") for node in postgres | mysql)
    # The image tests' variants name their database: the defaults mean PostgreSQL (copier.yml).
    assert any("test_image_migrates" in node and "defaults" in node for node in postgres)
    assert any("test_image_migrates" in node and "gunicorn-mysql" in node for node in mysql)
    assert not any("test_image_migrates" in node and "sqlite" in node for node in postgres | mysql)
    assert any("test_generated_suite_passes_with_extras[nodb-redis]" in node for node in having("redis"))
    assert any("test_compose_up_runs_the_stack" in node for node in having("container"))

    # Together, the jobs of the template's GitHub CI run every test.
    jobs = [_selector(args) for args in workflow_selections()]
    missed = sorted(node for node, names in marks.items() if not any(job(node, names) for job in jobs))
    assert missed == [], f"no job of .github/workflows/template.yml runs these: {missed[:10]}"


def workflow_selections() -> list[str]:
    """The pytest arguments each job of the template's GitHub CI runs with (matrix expanded)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "template.yml").read_text())
    found = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            command = step.get("run", "")
            if "make test-fast" in command:
                found.append("-m fast")
            for args in re.findall(r'make test PYTEST_ARGS="(.+?)"', command):
                for servers in job.get("strategy", {}).get("matrix", {}).get("servers", [None]):
                    found.append(args.replace("${SERVERS}", servers) if servers else args)
    return found


def _selector(args: str):
    """Whether pytest with these arguments runs a test (node id, marker names)."""
    from _pytest.mark.expression import Expression

    words = shlex.split(args)
    expression = Expression.compile(words[words.index("-m") + 1]) if "-m" in words else None
    ignored = [w.removeprefix("--ignore=") for w in words if w.startswith("--ignore=")]
    paths = [w for i, w in enumerate(words) if not w.startswith("-") and (i == 0 or words[i - 1] != "-m")]

    def selects(node: str, names: set[str]) -> bool:
        if any(node.startswith(p) for p in ignored) or (paths and not any(node.startswith(p) for p in paths)):
            return False
        return expression is None or expression.evaluate(lambda name, **_: name in names)

    return selects


def test_makefile_tiers_and_readme_name_both_commands() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-fast: setup.*\n\t.*pytest .*-m fast", makefile, re.MULTILINE)
    assert re.search(
        r"^test: setup.*\n\t\$\(UV\) run pytest -n 2 --dist loadgroup \$\(PYTEST_ARGS\)$", makefile, re.MULTILINE
    )
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test-fast\s", readme, re.MULTILINE) and re.search(r"^make test\s", readme, re.MULTILINE)
