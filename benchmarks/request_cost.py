"""What one /health/live request costs, in CPU instructions, layer by layer.

    uv run python benchmarks/request_cost.py [--requests 1000]

Renders the default project, then drives uvicorn's own HTTP protocol (httptools) in process with
an in-memory transport, under valgrind's callgrind: instruction counts do not depend on what else
the machine is doing, so the difference between two apps is exact where a load test is noisy.
Each variant runs twice (200 and 200 + N requests after a warm-up) and the difference is divided
by N, so start-up and imports cancel out. Writes docs/benchmarks/request-cost.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks" / "request-cost.md"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import PROJECT_ENV  # noqa: E402  (no pyenv pin, no outer VIRTUAL_ENV)
from container import BARE_APP, render  # noqa: E402

PACKAGE = "bench_service"  # what render() names the project's package

VARIANTS = f"""
import {PACKAGE}.main as project_main


async def raw(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"15"), (b"content-type", b"application/json")]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": b'{{"status":"ok"}}'}})


def raw_app():
    return raw


class PassThrough:
    def __init__(self, app, **_: object) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


def app_without_middleware():
    project_main.RequestContextMiddleware = PassThrough
    return project_main.create_app()
"""

DRIVER = """
import asyncio, sys
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

REQUEST = b"GET /health/live HTTP/1.1\\r\\nHost: localhost:8000\\r\\nUser-Agent: bench\\r\\n\\r\\n"


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, data):
        self.writes.append(data)

    def get_extra_info(self, name, default=None):
        return {"sockname": ("::1", 8000, 0, 0), "peername": ("::1", 5555, 0, 0)}.get(name, default)

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass


async def main(factory, count):
    # The same server options serve.py passes (proxy headers, no server header, no access log).
    config = Config(app=factory, factory=True, proxy_headers=True, forwarded_allow_ips="127.0.0.1",
                    access_log=False, server_header=False, lifespan="off", http="httptools")
    config.load()
    protocol = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)

    async def one():
        transport.writes.clear()
        protocol.data_received(REQUEST)
        while len(transport.writes) < 2:
            await asyncio.sleep(0)
        assert transport.writes[0].startswith(b"HTTP/1.1 200 "), transport.writes[0][:80]
        await asyncio.sleep(0)

    for _ in range(200 + count):
        await one()


import uvloop
uvloop.run(main(sys.argv[1], int(sys.argv[2])))
"""


def instructions(project: Path, factory: str, count: int) -> int:
    env = dict(
        PROJECT_ENV,
        PYTHONPATH=str(project / "bench"),
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",  # never connected (no lifespan)
    )
    python = project / ".venv" / "bin" / "python"
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(python),
         str(project / "bench" / "driver.py"), factory, str(count)],
        capture_output=True, text=True, env=env, cwd=project, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    assert found, out.stderr[-2000:]
    return int(found.group(1))


def per_request(project: Path, factory: str, count: int) -> float:
    return (instructions(project, factory, count) - instructions(project, factory, 0)) / count


ROWS = [
    ("Raw ASGI app answering the same bytes (uvicorn's own cost)", "variants:raw_app"),
    ("Bare FastAPI app, route on the app itself", "bare:create_flat_app"),
    ("Bare FastAPI app, route on an included APIRouter", "bare:create_app"),
    ("Generated app, its middleware replaced by a pass-through", "variants:app_without_middleware"),
    ("Generated app", f"{PACKAGE}.main:create_app"),
]


def page(counts: list[float], requests: int) -> list[str]:
    flat, router, bare_app, app = counts[1], counts[2], counts[3], counts[4]
    return [
        "# Request cost",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} with "
        f"`uv run python benchmarks/request_cost.py --requests {requests}`: CPU instructions per",
        "`GET /health/live`, counted by valgrind's callgrind while uvicorn's httptools protocol serves",
        "the request in process (no network, no load generator, so far less noise than a load test).",
        "The default project, production settings, serve.py's server options.",
        "",
        "| app | instructions per request | vs the bare app with an included router |",
        "| --- | ---: | ---: |",
        *(f"| {what} | {count:,.0f} | {router / count:.2f} |" for (what, _), count in zip(ROWS, counts, strict=True)),
        "",
        f"- FastAPI's included router alone costs {router - flat:,.0f} instructions per request",
        f"  (the flat app does the same work in {flat / router:.2f} of the instructions).",
        "- The template's middleware (request id, security headers, body limits, the 500 of an",
        f"  unhandled error, access log) costs {app - bare_app:,.0f}, of which uvicorn's writing",
        "  of the four headers it adds is part.",
        f"- The app against the bare app with an included router: {router / app:.2f} (aim >= 0.95);",
        f"  against the flat one, which matches its route the same way: {flat / app:.2f}.",
        "",
        "The comparison: every row is served by the same uvicorn protocol with the same options and",
        "answers the same request bytes,",
        "`GET /health/live HTTP/1.1` with `Host` and `User-Agent` (no body), over one kept-alive",
        "connection. The bare apps are plain FastAPI apps with that one route, `async def live()`",
        'returning `{"status": "ok"}` as the generated app\'s does (`BARE_APP` in',
        "benchmarks/container.py): one includes it from an `APIRouter` (the generated app includes its",
        "other routes so), one",
        "registers it on the app. The generated app is the default project as rendered, production",
        "settings, its database never connected (lifespan off; /health/live does not touch it). Its",
        "health routes sit on the app itself, ahead of every other route (main.py), so it matches a",
        "probe as the flat bare app does; the rendered project's .env (DOCS_ENABLED=true) keeps the",
        "docs routes, which every bare app has ahead of its route, but the router no longer tries them",
        "first.",
        "",
        "Counts move by about 1-2% between runs (garbage collection and hash seeds differ), so",
        "compare rows of one run.",
        "",
        "A load test ([Docker](container-docker.md), [Podman](container-podman.md)) also pays, in",
        "the kernel and the load generator on the same two cores, for the four more headers of each",
        "response; on a shared machine its requests per second are noisy.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="fd-cost-") as tmp:
        project = render(Path(tmp) / "bench-service")
        subprocess.run(["uv", "sync", "--quiet", "--locked"], cwd=project, check=True, env=PROJECT_ENV)
        bench = project / "bench"
        bench.mkdir()
        (bench / "bare.py").write_text(BARE_APP)
        (bench / "variants.py").write_text(VARIANTS)
        (bench / "driver.py").write_text(DRIVER)
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = list(pool.map(lambda row: per_request(project, row[1], args.requests), ROWS))
    lines = page(counts, args.requests)
    PAGE.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
