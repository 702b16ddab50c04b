"""Render time of the default project and of the largest combination (tasks skipped).

    uv run python benchmarks/render.py [--runs 7]

Prints the figures and writes docs/benchmarks/render.md. Aim: under 1 s for the defaults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks" / "render.md"
IGNORE = shutil.ignore_patterns(".git", ".venv", "site", "__pycache__", ".pytest_cache", ".ruff_cache")

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "largest": {
        "server": "gunicorn",
        "database": "postgresql",
        "platforms": ["railway", "digitalocean", "aws_ecs", "kubernetes", "vm"],
        "redis": True,
        "worker": "celery",
        "reverse_proxy": "traefik",
        "ci": "github",
        "sentry": True,
        "metrics": True,
        "domain": "api.example.com",
        "cors_origins": "https://app.example.com",
    },
}


def _render_in_process(src: Path, dest: Path, answers: dict[str, Any]) -> float:
    from copier import run_copy

    started = time.perf_counter()
    run_copy(str(src), str(dest), data=answers, defaults=True, unsafe=True, skip_tasks=True, quiet=True)
    return time.perf_counter() - started


def _render_cli(src: Path, dest: Path, answers: dict[str, Any]) -> float:
    import json

    cmd = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--skip-tasks", "--quiet"]
    for key, value in answers.items():
        cmd += ["--data", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    started = time.perf_counter()
    subprocess.run([*cmd, str(src), str(dest)], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    results: list[tuple[str, str, float, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "template"
        shutil.copytree(ROOT, src, ignore=IGNORE)
        for name, answers in CASES.items():
            for how, fn in (("in-process (copier API)", _render_in_process), ("CLI (new process)", _render_cli)):
                fn(src, Path(tmp) / f"warm-{name}-{how[:3]}", answers)  # warm the file cache
                times = [fn(src, Path(tmp) / f"{name}-{how[:3]}-{i}", answers) for i in range(args.runs)]
                files = sum(1 for p in (Path(tmp) / f"{name}-{how[:3]}-0").rglob("*") if p.is_file())
                results.append((name, how, statistics.median(times), min(times), files))

    startup = []
    for _ in range(args.runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "copier", "--version"], check=True, capture_output=True)
        startup.append(time.perf_counter() - started)
    results.append(("(none)", "CLI start-up alone: copier --version", statistics.median(startup), min(startup), 0))

    rows = [
        f"| {name} | {how} | {median * 1000:.0f} ms | {best * 1000:.0f} ms | {files} |"
        for name, how, median, best, files in results
    ]
    table = "\n".join(["| project | how | median | best | files |", "| --- | --- | --- | --- | --- |", *rows])
    print(table)
    defaults_ms = next(m for n, h, m, _, _ in results if n == "defaults" and h.startswith("in-process")) * 1000
    verdict = "meets" if defaults_ms < 1000 else "misses"
    PAGE.write_text(
        "# Render time\n\n"
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, Python {platform.python_version()}, "
        f"{args.runs} runs each after one warm-up, tasks skipped, with:\n\n"
        "```bash\nuv run python benchmarks/render.py\n```\n\n"
        f"{table}\n\n"
        f"The default project renders in {defaults_ms:.0f} ms in process, which {verdict} the aim of "
        "under 1 s. The CLI figure adds Python start-up and Copier's imports. The largest combination "
        "is every platform, gunicorn, PostgreSQL, Redis with Celery, Traefik, GitHub Actions, Sentry "
        "and metrics.\n"
    )
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
