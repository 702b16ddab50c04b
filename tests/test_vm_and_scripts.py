"""The shared scripts and the VM target.

- every rendered shell script passes shellcheck and is executable;
- scripts/deploy.sh: usage and exit 2 on bad arguments, lists only the chosen platforms, and hands
  the environment to the platform's own script;
- scripts/health-check.sh against a real running generated app: 0 when ready, 1 when the deadline
  passes (closed port, and a running app whose database is unavailable), 2 on usage errors;
- the VM's compose override validates on top of compose.yaml, and deploy/vm/deploy.sh migrates,
  restarts, waits for ready and rolls back (ssh and docker stand in for the VM: there is none here).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PROJECT_ENV, need, render_template, run
from deploy_checks import derived, shellcheck, tool

ALL_PLATFORMS = ["railway", "digitalocean", "aws_ecs", "kubernetes", "vm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sh(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def rendered(template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    cache: dict[str, Path] = {}

    def _get(**answers: Any) -> Path:
        key = repr(sorted(answers.items()))
        if key not in cache:
            dest = tmp_path_factory.mktemp("scripts") / "my-service"
            cache[key] = render_template(template_src, dest, **answers)
        return cache[key]

    return _get


SCRIPT_SETS = {
    "all-platforms-postgresql-worker": {
        "platforms": ALL_PLATFORMS,
        "database": "postgresql",
        "redis": True,
        "worker": "celery",
    },
    "vm-sqlite": {"platforms": ["vm", "railway"], "database": "sqlite"},
    "k8s-vm-nodb": {"platforms": ["kubernetes", "vm"], "database": "none"},
}


@pytest.mark.parametrize("key", SCRIPT_SETS)
def test_every_rendered_script_is_executable_and_shellcheck_clean(rendered: Callable[..., Path], key: str) -> None:
    project = rendered(**SCRIPT_SETS[key])
    scripts = sorted(project.rglob("*.sh"))
    values = derived(project)
    expected = {"scripts/health-check.sh", "scripts/deploy.sh"} | {
        f"deploy/{values['platform_dirs'][p]}/deploy.sh" for p in SCRIPT_SETS[key]["platforms"]
    }
    assert expected <= {str(p.relative_to(project)) for p in scripts}
    for script in scripts:
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
    shellcheck(scripts)


def test_shellcheck_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nfor f in $(ls *.txt); do echo $f; done\n")
    with pytest.raises(AssertionError, match="SC"):
        shellcheck([bad])


def test_deploy_dispatch_usage_and_exit_codes(rendered: Callable[..., Path]) -> None:
    project = rendered(platforms=["railway", "vm"], database="postgresql")
    script = project / "scripts/deploy.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}

    no_args = sh([str(script)], project, env)
    assert no_args.returncode == 2
    listed = [line.split()[0] for line in no_args.stderr.splitlines() if line.startswith("  ")]
    assert listed == ["railway", "vm"], no_args.stderr  # only the chosen platforms
    for bad in (["kubernetes"], ["heroku"], ["vm", "qa"], ["vm", "staging", "extra"]):
        result = sh([str(script), *bad], project, env)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Usage:" in result.stderr
    helped = sh([str(script), "--help"], project, env)
    assert helped.returncode == 0 and "Usage:" in helped.stdout

    # The platform's own script runs with the environment: the VM script names it when VM_HOST is missing.
    vm = sh([str(script), "vm", "staging"], project, env)
    assert vm.returncode == 2 and "VM_HOST is not set" in vm.stderr and "staging VM" in vm.stderr
    vm_default = sh([str(script), "vm"], project, env)
    assert "production VM" in vm_default.stderr
    railway = sh([str(script), "railway", "staging"], project, env)
    assert railway.returncode == 127 and "railway CLI not found" in railway.stderr


# ---------------------------------------------------------------------------------------------
# scripts/health-check.sh against a running generated app
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def running_app(project: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The generated app (SQLite, migrated) served by `python -m <pkg>.serve` on a free port."""
    root = project(database="sqlite")
    values = derived(root)
    folder = tmp_path_factory.mktemp("running")
    env = {
        **PROJECT_ENV,
        "ENVIRONMENT": "development",
        "DATABASE_URL": f"sqlite:///{folder / 'app.db'}",
        "HOST": "127.0.0.1",
        # serve.py execs the server by name, from the project's environment.
        "PATH": f"{root / '.venv/bin'}{os.pathsep}{PROJECT_ENV['PATH']}",
    }
    python = root / ".venv/bin/python"
    run([str(root / ".venv/bin/alembic"), "upgrade", "head"], cwd=root, env=env, timeout=120)
    servers = []

    def serve(database_url: str) -> int:
        port = free_port()
        process = subprocess.Popen(
            [str(python), "-m", f"{values['app_module'].split('.')[0]}.serve"],
            cwd=root,
            env={**env, "PORT": str(port), "DATABASE_URL": database_url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        servers.append(process)
        return port

    ready_port = serve(env["DATABASE_URL"])
    # A database file inside a folder that does not exist: the app runs, /health/ready answers 503.
    broken_port = serve(f"sqlite:///{folder / 'missing' / 'app.db'}")
    yield {"root": root, "values": values, "ready_port": ready_port, "broken_port": broken_port, "env": env}
    for process in servers:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def health_check(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return sh([str(root / "scripts/health-check.sh"), *args], root, env, timeout=90)


def test_health_check_succeeds_against_the_running_app(running_app: dict[str, Any]) -> None:
    root, values = running_app["root"], running_app["values"]
    url = f"http://127.0.0.1:{running_app['ready_port']}{values['health_ready_path']}"
    result = health_check(root, "-t", "60", "-i", "1", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready" in result.stdout
    # Without a URL it polls the ready path on 127.0.0.1:$PORT.
    by_port = health_check(root, "-t", "30", env={**os.environ, "PORT": str(running_app["ready_port"])})
    assert by_port.returncode == 0, by_port.stdout + by_port.stderr
    assert values["health_ready_path"] in by_port.stdout


def test_health_check_deadline_expires_with_exit_1(running_app: dict[str, Any]) -> None:
    root, values = running_app["root"], running_app["values"]
    closed = f"http://127.0.0.1:{free_port()}{values['health_ready_path']}"
    started = time.monotonic()
    result = health_check(root, "-t", "2", "-i", "1", closed)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not ready" in result.stderr
    assert time.monotonic() - started < 60, "the deadline must bound the wait"
    # The app runs but its database is unavailable: live answers, ready does not.
    port = running_app["broken_port"]
    live = health_check(root, "-t", "60", "-i", "1", f"http://127.0.0.1:{port}{values['health_live_path']}")
    assert live.returncode == 0, live.stdout + live.stderr
    not_ready = health_check(root, "-t", "3", "-i", "1", f"http://127.0.0.1:{port}{values['health_ready_path']}")
    assert not_ready.returncode == 1, not_ready.stdout + not_ready.stderr


def test_health_check_usage_errors_exit_2(running_app: dict[str, Any]) -> None:
    root = running_app["root"]
    for args in (["-t", "soon"], ["-x"], ["ftp://example.com/"], ["http://a/", "http://b/"]):
        result = health_check(root, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "Exit codes" in health_check(root, "-h").stdout


def test_health_check_without_an_http_client_exits_3(rendered: Callable[..., Path], tmp_path: Path) -> None:
    root = rendered(platforms=["vm"], database="sqlite")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bash = tool("bash")
    assert bash
    (bin_dir / "bash").symlink_to(bash)
    result = sh([bash, str(root / "scripts/health-check.sh"), "-t", "1"], root, {"PATH": str(bin_dir)})
    assert result.returncode == 3, result.stdout + result.stderr


def test_python_fallback_when_curl_is_missing(running_app: dict[str, Any], tmp_path: Path) -> None:
    """Hosts without curl (slim images) still get an answer, through python3's urllib."""
    root, values = running_app["root"], running_app["values"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "python3", "sleep"):
        found = tool(name) if name != "python3" else sys.executable
        assert found
        (bin_dir / name).symlink_to(found)
    url = f"http://127.0.0.1:{running_app['ready_port']}{values['health_ready_path']}"
    ok = sh(
        [str(bin_dir / "bash"), str(root / "scripts/health-check.sh"), "-t", "30", url], root, {"PATH": str(bin_dir)}
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    closed = f"http://127.0.0.1:{free_port()}/"
    failed = sh(
        [str(bin_dir / "bash"), str(root / "scripts/health-check.sh"), "-t", "1", closed], root, {"PATH": str(bin_dir)}
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
