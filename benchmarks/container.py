"""The generated image, measured: build times, size, start-up, throughput, shutdown.

    uv run python benchmarks/container.py [--engine docker|podman] [--python 3.15] [--seconds 10] [--build-rounds 3]

Renders the default project (on the template's default Python, or --python; the stand-in base image
where the official one cannot be pulled; see tests/containers.py), builds and runs it with Docker or
Podman, and compares it with a bare FastAPI app served the same way (the same image, venv and
uvicorn flags, a one-route app). Needs the host's PostgreSQL (FD_TEST_POSTGRES_URL). Load goes to
127.0.0.1 only, bounded in time.

Measures with every engine that works here (Docker needs a client with BuildKit: buildx, or a client
older than 23; FD_DOCKER names it), or the one named by --engine. Prints the figures and writes
docs/benchmarks/container-<engine>.md per engine (container-<engine>-py<XY>.md for another
Python). Aims: layers added to the base within 10% of the virtual environment's size; code-only
rebuild under 10% of a cold build; live requests per second at least 0.95 of the bare app's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from containers import ENGINE_NAMES, Engine, base_image, derive, detect_engine, ensure_base_images  # noqa: E402

PAGES = ROOT / "docs" / "benchmarks"
PYTHON = derive({})["python"]["version"]  # the template's default; --python changes it
IGNORE = shutil.ignore_patterns(".git", ".venv", "site", "__pycache__", ".pytest_cache", ".ruff_cache")
POSTGRES_URL = os.environ.get("FD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BUILDAH_CACHE = Path("/var/tmp/buildah-cache")  # where Podman keeps RUN --mount=type=cache

BARE_APP = """
from fastapi import APIRouter, FastAPI


async def live() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> FastAPI:
    \"\"\"The route on an APIRouter that the app includes, as the generated app does for its
    other routes (and FastAPI's "bigger applications" guide): since FastAPI 0.137 one is matched
    through a nested node at run time, a cost of the framework, not of the template.\"\"\"
    router = APIRouter()
    router.add_api_route("/health/live", live, methods=["GET"])
    app = FastAPI()
    app.include_router(router)
    return app


def create_flat_app() -> FastAPI:
    \"\"\"The route registered on the app itself: no included router to match through.\"\"\"
    app = FastAPI()
    app.add_api_route("/health/live", live, methods=["GET"])
    return app
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def render(dest: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import render_template

    src = dest.parent / "template"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    # The tasks find uv on PATH: the template's own first (a pyenv shim fails for a Python pyenv lacks).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    render_template(src, dest, tasks=True, python_version=PYTHON, project_name="Bench Service")
    if not (dest / "uv.lock").exists():
        subprocess.run(["uv", "lock", "--quiet"], cwd=dest, check=True)
    return dest


@contextlib.contextmanager
def empty_uv_cache(engine: Engine) -> Iterator[str]:
    """An empty cache mount for one build (Podman: move its cache folder aside; Docker: prune it)."""
    if engine.name == "podman":
        aside = BUILDAH_CACHE.with_name(f"buildah-cache-aside-{uuid.uuid4().hex[:6]}")
        moved = BUILDAH_CACHE.exists()
        if moved:
            BUILDAH_CACHE.rename(aside)
        try:
            yield "empty cache mount (wheels downloaded from PyPI)"
        finally:
            shutil.rmtree(BUILDAH_CACHE, ignore_errors=True)
            if moved:
                aside.rename(BUILDAH_CACHE)
    else:
        subprocess.run(engine.cmd("builder", "prune", "-f", "--filter", "type=exec.cachemount"), check=False)
        yield "cache mounts pruned (wheels downloaded from PyPI)"


def create_database() -> str:
    name = f"fd_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", POSTGRES_URL, "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"], check=True)
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    subprocess.run(["psql", POSTGRES_URL, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


def wait_for(url: str, status: int = 200, timeout: float = 60) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer {status} within {timeout}s")


# With two or more CPUs the servers run on CPU 0 and the load generator on CPU 1, so the load
# generator never takes CPU time from the server it measures.
PINNED = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def server_cpu(engine: Engine) -> tuple[list[str], list[str]]:
    """(command prefix, run flags) that keep a container's processes on CPU 0."""
    if not PINNED:
        return [], []
    if engine.name == "docker":
        return [], ["--cpuset-cpus", "0"]
    return ["taskset", "-c", "0"], []  # Podman's processes inherit the CPU affinity


def start_pinned(engine: Engine, *args: str) -> None:
    """`run -d ARGS` with the container's processes kept on CPU 0 (when pinning)."""
    prefix, flags = server_cpu(engine)
    subprocess.run([*prefix, *engine.cmd(*engine.run_args(), *flags, *args)], check=True, capture_output=True)


def load(url: str, seconds: int, connections: int) -> tuple[float, str]:
    """Requests per second at url: wrk when installed, else a bounded httpx load generator."""
    if shutil.which("wrk"):
        pin = ["taskset", "-c", "1"] if PINNED else []
        threads = "-t1" if PINNED else "-t2"
        out = subprocess.run(
            [*pin, "wrk", threads, f"-c{connections}", f"-d{seconds}s", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise RuntimeError(f"{url}: {errors.group(1)} errors under load\n{out}")
        assert match, out
        where = ", server on CPU 0, wrk on CPU 1" if PINNED else ""
        return float(match.group(1)), f"wrk {threads} -c{connections} -d{seconds}s{where}"
    import asyncio

    import httpx

    async def run() -> float:
        done = 0
        deadline = time.perf_counter() + seconds
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline and done < 2_000_000:
                    response = await client.get(url)
                    response.raise_for_status()
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            return done / (time.perf_counter() - started)

    return asyncio.run(run()), f"httpx, {connections} connections, {seconds}s"


def image_size(engine: Engine, ref: str) -> int:
    return int(engine.inspect(ref, "{{.Size}}", kind="image"))


BUILD_NOTES = {
    "podman": [
        "Build times are Podman's (`--isolation chroot`, `--format docker`). Podman checks its cache",
        "step by step, a fraction of a second per step even when nothing changed (the 'nothing",
        "changed' row), and that fixed cost is the floor under every rebuild.",
    ],
    "docker": [
        "Build times are Docker's with BuildKit (`DOCKER_BUILDKIT=1`, `--network host`). BuildKit",
        "resolves the whole graph at once and answers cached steps almost for free, so a rebuild",
        "costs about what it re-runs.",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=ENGINE_NAMES, help="measure with this engine only")
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating load runs per server")
    parser.add_argument("--build-rounds", type=int, default=3, help="timed builds of each kind (median)")
    parser.add_argument("--python", default=PYTHON, help=f"the project's python_version (default {PYTHON})")
    args = parser.parse_args()
    default = PYTHON
    globals()["PYTHON"] = args.python

    names = [args.engine] if args.engine else list(ENGINE_NAMES)
    engines = [found for found in map(detect_engine, names) if found is not None]
    if not engines:
        raise SystemExit(f"no container engine: {' nor '.join(names)} works (see tests/containers.py)")
    for engine in engines:
        print(f"\n== {engine.name}", flush=True)
        measure(engine, args, suffix="" if args.python == default else f"-py{args.python.replace('.', '')}")


def measure(engine: Engine, args: argparse.Namespace, suffix: str = "") -> None:
    values = derive({})
    bases = ensure_base_images(engine, PYTHON, values["uv_version"])
    rows: list[tuple[str, str, str]] = []
    tag = f"localhost/fd-bench:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="fd-bench-") as tmp:
        project = render(Path(tmp) / "bench-service")
        import yaml

        values = derive(yaml.safe_load((project / ".copier-answers.yml").read_text()))
        package = values["app_module"].split(".", 1)[0]
        build_args = {"PYTHON_VERSION": PYTHON}

        def build(*extra: str) -> tuple[float, str]:
            return timed(engine.build, project, tag, build_args, *extra)

        rounds = max(1, args.build_rounds)
        empties: list[float] = []
        for _ in range(rounds):
            with empty_uv_cache(engine) as how:
                empties.append(build("--no-cache")[0])
        cold_empty = statistics.median(empties)
        rows.append(("Cold build, no layer cache, " + how, f"{cold_empty:.2f} s", f"median of {_list(empties)}"))
        colds = [build("--no-cache")[0] for _ in range(rounds)]
        cold = statistics.median(colds)
        rows.append(
            ("Cold build, no layer cache, wheels in the cache mount", f"{cold:.2f} s", f"median of {_list(colds)}")
        )
        build()  # Podman re-runs RUN steps once after --no-cache; Docker answers from its cache
        unchanged = [build()[0] for _ in range(rounds)]
        floor = statistics.median(unchanged)
        rows.append(
            (
                "Rebuild with nothing changed (the engine's fixed cost)",
                f"{floor:.2f} s",
                f"{floor / cold:.0%} of the cold build, the floor under any rebuild; median of {_list(unchanged)}",
            )
        )
        main_py = project / "src" / package / "main.py"
        original = main_py.read_text()
        rebuilds: list[float] = []
        reused = True
        for _ in range(rounds):
            main_py.write_text(original + f"\n# a code-only change {uuid.uuid4().hex}\n")
            seconds, log = build()
            rebuilds.append(seconds)
            installs = re.findall(r"Installed \d+ packages?", log)
            if installs != ["Installed 1 package"]:
                reused = False
                print(f"code-only rebuild installed: {installs}\n{log[-4000:]}", file=sys.stderr)
        rebuild = statistics.median(rebuilds)
        rows.append(
            (
                "Code-only rebuild (dependency layer reused: " + ("yes" if reused else "NO") + ")",
                f"{rebuild:.2f} s",
                f"{rebuild / cold:.1%} of the cold build with cached wheels, {rebuild / cold_empty:.1%} of the one"
                f" with an empty cache mount (aim < 10%); median of {_list(rebuilds)}",
            )
        )

        total, base = image_size(engine, tag), image_size(engine, base_image(PYTHON))
        venv = int(
            engine.run(
                "run", "--rm", *engine.run_flags, tag, "python", "-c",
                "import os; print(sum(os.lstat(os.path.join(d, f)).st_size"
                " for d, _, fs in os.walk('/app/.venv') for f in fs))",
            ).stdout.strip()
        )  # fmt: skip
        added = total - base
        rows.append(
            ("Image size, total", f"{total / 1e6:.0f} MB", f"base {base / 1e6:.0f} MB ({bases[base_image(PYTHON)]})")
        )
        rows.append(
            (
                "Added on top of the base",
                f"{added / 1e6:.1f} MB",
                f"{added / venv - 1:+.1%} vs the venv (aim within 10%)",
            )
        )
        rows.append(("Installed virtual environment (the floor)", f"{venv / 1e6:.1f} MB", ""))

        url = create_database()
        names: list[str] = []
        try:
            env = ["-e", f"DATABASE_URL={url}", "-e", "ENVIRONMENT=production"]
            env += ["-e", f"SECRET_KEY={secrets.token_urlsafe(48)}"]
            migrate = engine.run("run", "--rm", *engine.run_flags, *env, tag, *values["migration_argv"], timeout=120)
            assert migrate.returncode == 0
            # The app as the image runs it (read-only), and the bare apps served the same way.
            port = free_port()
            host = "[::1]" if ":" in values["bind_host"] else "127.0.0.1"  # "::" listens on IPv6 only
            name = f"fd-bench-{uuid.uuid4().hex[:8]}"
            names.append(name)
            started = time.perf_counter()
            read_only = ["--read-only", "--tmpfs", "/tmp"]
            start_pinned(engine, "-d", "--name", name, *read_only, *env, "-e", f"PORT={port}", tag)
            wait_for(f"http://{host}:{port}{values['health_ready_path']}")
            start_to_ready = time.perf_counter() - started
            rows.append(("Start to first ready 200 (`run -d` to /health/ready)", f"{start_to_ready:.2f} s", ""))

            bare_dir = Path(tmp) / "bare"
            bare_dir.mkdir()
            (bare_dir / "bare.py").write_text(BARE_APP)
            # The bare apps are started by the project's own serve.main(): same socket, server, flags.
            bare_ports: dict[str, int] = {}
            for factory in ("create_app", "create_flat_app"):
                bare = f"fd-bench-bare-{uuid.uuid4().hex[:8]}"
                names.append(bare)
                bare_ports[factory] = free_port()
                starter = f"from {package} import serve; serve.APP_FACTORY = 'bare:{factory}'; serve.main()"
                start_pinned(
                    engine, "-d", "--name", bare, *read_only,
                    "-v", f"{bare_dir}:/bench:ro", "-e", "PYTHONPATH=/bench", "-e", f"PORT={bare_ports[factory]}",
                    tag, "python", "-c", starter,
                )  # fmt: skip
                try:
                    wait_for(f"http://{host}:{bare_ports[factory]}/health/live")
                except RuntimeError:
                    logs = engine.run("logs", bare, check=False)
                    raise RuntimeError(f"the bare app did not start:\n{logs.stdout}{logs.stderr}") from None

            # One worker's peak memory (VmHWM of the container's server process, seen from the
            # host) while it refuses 200 MB bodies, declared and chunked (body_limit.py's client),
            # before any load run.
            from body_limit import _send, _status

            pid = engine.inspect(name, "{{.State.Pid}}")
            resident = _status(pid, "VmRSS")
            refused = [_send(port, 200, declared=d, host=host.strip("[]"))[0] for d in (True, False)]
            rows.append(
                (
                    "Peak memory of the worker while 200 MB bodies are refused (VmHWM)",
                    f"{_status(pid, 'VmHWM') / 1024:.1f} MB",
                    f"answers {', '.join(map(str, refused))} (Content-Length, chunked);"
                    f" resident before: {resident / 1024:.1f} MB",
                )
            )

            targets = {
                "app": f"http://{host}:{port}{values['health_live_path']}",
                "router": f"http://{host}:{bare_ports['create_app']}/health/live",
                "flat": f"http://{host}:{bare_ports['create_flat_app']}/health/live",
            }
            for target in targets.values():
                load(target, 2, args.connections)  # warm-up
            # Alternate the three and keep the best of each: other work on the machine is noise.
            runs: dict[str, list[float]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for which, target in targets.items():
                    rps, tool = load(target, args.seconds, args.connections)
                    runs[which].append(rps)
            best = {which: max(found) for which, found in runs.items()}
            tool += f", best of {args.rounds}"
            rows.append((f"/health/live requests per second ({tool})", f"{best['app']:,.0f}", ""))
            rows.append(("Bare FastAPI app, route on an included APIRouter", f"{best['router']:,.0f}", ""))
            rows.append(("Bare FastAPI app, route on the app itself", f"{best['flat']:,.0f}", ""))
            rows.append(
                (
                    "Ratio app / bare app with an included router",
                    f"{best['app'] / best['router']:.2f}",
                    "aim >= 0.95; the bare app also pays for matching through an included router",
                )
            )
            paired = sorted(a / r for a, r in zip(runs["app"], runs["router"], strict=True))
            rows.append(
                (
                    "Median of the per-round ratios app / bare app with an included router",
                    f"{statistics.median(paired):.2f}",
                    f"rounds: {', '.join(f'{ratio:.2f}' for ratio in paired)}",
                )
            )
            rows.append(
                (
                    "Ratio app / bare app with the route on the app",
                    f"{best['app'] / best['flat']:.2f}",
                    "the template's own cost (middleware, settings, logging): probes match alike",
                )
            )

            signalled = time.perf_counter()
            engine.run("kill", "--signal", "TERM", name)
            engine.run("wait", name, timeout=60)
            stop = time.perf_counter() - signalled
            code = engine.inspect(name, "{{.State.ExitCode}}")
            rows.append(("SIGTERM to exit, idle (exit code " + code + ")", f"{stop:.2f} s", ""))
        finally:
            engine.remove(*names)
            drop_database(url)
            subprocess.run(engine.cmd("rmi", "-f", tag), capture_output=True, check=False)

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows.append(("Load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}", "other work on the machine"))
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {engine_version(engine)}"
    width = max(len(r[0]) for r in rows)
    for what, value, note in rows:
        print(f"{what:<{width}}  {value:>10}  {note}")
    lines = [
        f"# Container benchmark: {engine.name.capitalize()}",
        "",
        f"Measured {when} on {machine} with `uv run python benchmarks/container.py --engine {engine.name}"
        f"{f' --python {PYTHON}' if suffix else ''} --seconds {args.seconds} --rounds {args.rounds}"
        f" --build-rounds {args.build_rounds}`:",
        f"the default project (uvicorn, PostgreSQL) rendered for Python {PYTHON}, base image",
        f"`{base_image(PYTHON)}` ({bases[base_image(PYTHON)]}), the app run read-only with `--network host`",
        "against the host's PostgreSQL. The bare apps are one-route FastAPI apps started from the same",
        "image by the project's own `serve.main()` (same socket, server and flags): one includes its",
        "route from an `APIRouter`, one registers it on the app, as the generated app does its health",
        "routes (ahead of every other route). The ratio to the second is the cost of the generated app's",
        "middleware, settings and logging; the first also pays FastAPI's cost of matching a request",
        "through an included router (FastAPI 0.137 and later keep included routers as nested nodes;",
        "[request cost](request-cost.md) counts both).",
        "",
        *BUILD_NOTES[engine.name],
        "A code-only rebuild re-runs the builder's project install and ships one layer holding the",
        "project's code; the dependency layer is reused (tests/test_container.py compares the layers).",
        "",
        "| what | value | note |",
        "| --- | ---: | --- |",
        *(f"| {what} | {value} | {note} |" for what, value, note in rows),
        "",
        "Requests per second come from a load test on a machine other work shares (the load average",
        "row): they move by 10% or more between runs, so the rounds are alternated and the best of",
        "each kept. [Request cost](request-cost.md) counts instructions instead, with far less noise.",
        "",
        "The stand-in base image (a Debian root filesystem, see tests/containers.py) is larger than the",
        "official slim image, so the added size is the figure to compare with the virtual environment.",
        "",
    ]
    page = PAGES / f"container-{engine.name}{suffix}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))
    print(f"wrote {page.relative_to(ROOT)}")


def engine_version(engine: Engine) -> str:
    fmt = "{{.Server.Version}}" if engine.name == "docker" else "{{.Version}}"
    found = subprocess.run(engine.cmd("version", "--format", fmt), capture_output=True, text=True, check=False)
    return f"{engine.name} {found.stdout.strip() or '(version unknown)'}"


def _list(seconds: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in seconds) + " s"


if __name__ == "__main__":
    main()
