"""Pairwise answer sets: every pair of values of any two questions appears in some set.

Greedy construction with a fixed seed, so the sets are the same on every run. Combinations
that copier.yml refuses are never produced.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

PLATFORM_SETS: list[tuple[str, ...]] = [
    ("railway",),
    ("digitalocean",),
    ("aws_ecs",),
    ("aws_eb",),
    ("kubernetes",),
    ("vm",),
    ("railway", "vm"),
    ("railway", "digitalocean", "aws_ecs", "aws_eb", "kubernetes", "vm"),
]
EXTRAS = [  # (redis, worker)
    (False, "none"),
    (True, "none"),
    (True, "arq"),
    (True, "celery"),
]
FACTORS: dict[str, list[Any]] = {
    "server": ["uvicorn", "gunicorn", "uvicorn-workers"],
    "database": ["postgresql", "mysql", "sqlite", "none"],
    "platforms": PLATFORM_SETS,
    "extras": EXTRAS,
    "reverse_proxy": ["none", "nginx", "traefik"],
    "ci": ["github", "gitlab", "none"],
    "sentry": [False, True],
    "metrics": [False, True],
    "python_version": ["3.11", "3.12", "3.13", "3.14", "3.15"],  # every choice of copier.yml
    "domain": ["", "api.example.com"],
}
SQLITE_PLATFORMS = {"railway", "vm"}


def allowed(row: dict[str, Any]) -> bool:
    if row.get("database") == "sqlite" and "platforms" in row:
        return set(row["platforms"]) <= SQLITE_PLATFORMS
    # App Platform cannot pull from GitLab's registry (copier.yml's ci validator).
    return not (row.get("ci") == "gitlab" and "digitalocean" in row.get("platforms", ()))


def _pairs(row: dict[str, Any]) -> set[tuple[tuple[str, Any], tuple[str, Any]]]:
    items = sorted(((k, repr(v)) for k, v in row.items()), key=lambda kv: kv[0])
    return set(itertools.combinations(items, 2))


def pairwise(seed: int = 2026, candidates: int = 60) -> list[dict[str, Any]]:
    names = list(FACTORS)
    uncovered = {
        ((a, repr(va)), (b, repr(vb)))
        for a, b in itertools.combinations(sorted(names), 2)
        for va in FACTORS[a]
        for vb in FACTORS[b]
        if allowed({a: va, b: vb})
    }
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    while uncovered:
        # Start from one uncovered pair so every round makes progress, then fill the rest.
        (a, ra), (b, rb) = min(uncovered)
        fixed = {a: next(v for v in FACTORS[a] if repr(v) == ra), b: next(v for v in FACTORS[b] if repr(v) == rb)}
        best, best_gain = None, -1
        for _ in range(candidates):
            row = dict(fixed)
            for name in names:
                if name not in row:
                    options = [v for v in FACTORS[name] if allowed({**row, name: v})]
                    row[name] = rng.choice(options)
            if not allowed(row):
                continue
            gain = len(_pairs(row) & uncovered)
            if gain > best_gain:
                best, best_gain = row, gain
        assert best is not None
        uncovered -= _pairs(best)
        rows.append(best)
    return rows


def to_answers(row: dict[str, Any]) -> dict[str, Any]:
    """A pairwise row as Copier answers."""
    answers = {k: v for k, v in row.items() if k != "extras"}
    answers["platforms"] = list(row["platforms"])
    answers["redis"], answers["worker"] = row["extras"]
    return answers


# Names at the edges of what the validators accept (issue 12): the longest name, slug,
# description and author, quotes and backslashes, and names that hold a reserved word without
# being one. Each renders with every platform and option that prints a name.
_LONG_DESCRIPTION = ("Tracks \"stock\" across warehouses \\ stores, with O'Brien's rules; " * 4)[:200].strip()
NAME_CASES: list[dict[str, Any]] = [
    {
        "project_name": "Inventory Management API for Warehouses, Stores & Depots EU",
        "project_slug": "inventory-management-api-for-warehouses",
        "description": _LONG_DESCRIPTION,
        "author_name": ('Platform Team "Ops" O\'Brien ' * 4)[:100].strip(),
        "author_email": "o'brien.platform+ops@example.co.uk",
    },
    {"project_name": "Redis Cache", "description": "Caches $HOME `keys` and $(hot) values"},
    {"project_name": "Yes Please", "project_slug": "yes-api", "package_name": "yes_api"},
    {"project_name": "Tests Runner", "author_name": "Zoë Ångström"},
]
NAME_CASE_OPTIONS: dict[str, Any] = {
    "platforms": ["railway", "aws_ecs", "aws_eb", "kubernetes", "vm"],  # digitalocean: not with GitLab
    "redis": True,
    "worker": "celery",
    "reverse_proxy": "nginx",
    "ci": "gitlab",
    "sentry": True,
    "metrics": True,
    "domain": "api.example.com",
    "cors_origins": "https://App.Example.com,http://localhost:3000",
}
# Reserved words: each refused for the question it is given to (tests/test_answers.py has more).
RESERVED_CASES: list[dict[str, Any]] = [
    {"project_name": "Logging"},  # slug "logging" is a standard-library module
    {"project_name": "FastAPI"},  # a dependency: uv lock would fail ("depends on itself")
    {"project_name": "Tests"},
    {"project_name": "Null"},
    {"project_slug": "on"},
]
