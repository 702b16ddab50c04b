"""Jinja filters and tests that copier.yml uses to derive defaults and validate answers.

Kept free of Copier imports so tests can call the functions directly.
"""

from __future__ import annotations

import json
import keyword
import re
import unicodedata
from collections.abc import Iterable

from jinja2 import Environment
from jinja2.ext import Extension

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
ORIGIN_RE = re.compile(r"^https?://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
SLUG_MAX = 40

# Why SQLite cannot run on a platform: several replicas share no file, or the disk is ephemeral.
SQLITE_REFUSED = {
    "digitalocean": "App Platform containers have no persistent disk",
    "aws_ecs": "Fargate tasks have ephemeral storage and the service runs several tasks",
    "kubernetes": "the Deployment runs several replicas that cannot share one SQLite file",
}


def slugify(value: str) -> str:
    """Turn a display name into kebab-case: 'My Café API' -> 'my-cafe-api'."""
    ascii_value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_value.lower()).strip("-")
    slug = re.sub(r"^[0-9-]+", "", slug)  # must start with a letter
    return slug[:SLUG_MAX].rstrip("-")


def to_identifier(value: str) -> str:
    """Turn a slug into a Python package name: 'my-service' -> 'my_service'."""
    ident = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    ident = re.sub(r"^[0-9_]+", "", ident)
    if keyword.iskeyword(ident):
        ident = f"{ident}_app"
    return ident or "app"


def is_slug(value: str) -> bool:
    return bool(SLUG_RE.match(value)) and len(value) <= SLUG_MAX


def is_identifier(value: str) -> bool:
    return bool(IDENTIFIER_RE.match(value)) and not keyword.iskeyword(value)


def is_email(value: str) -> bool:
    return bool(EMAIL_RE.match(value))


def is_hostname(value: str) -> bool:
    return bool(HOSTNAME_RE.match(value))


def split_origins(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def bad_origins(value: str) -> list[str]:
    """The entries of a comma-separated origin list that are not scheme://host[:port]."""
    return [f'"{item}"' for item in split_origins(value) if not ORIGIN_RE.match(item)]


def sqlite_refusals(platforms: Iterable[str], database: str) -> list[str]:
    """Chosen platforms on which the chosen database cannot work (only SQLite has limits)."""
    if database != "sqlite":
        return []
    return [p for p in platforms if p in SQLITE_REFUSED]


def sqlite_refusal_reason(platforms: Iterable[str], database: str) -> str:
    reasons = [f"{SQLITE_REFUSED[p]}." for p in sqlite_refusals(platforms, database)]
    return " ".join(r[0].upper() + r[1:] for r in reasons)


def ts_str(value: object) -> str:
    """A TypeScript string literal of value: JSON's escaping, without Jinja's HTML escapes (&&)."""
    return json.dumps(str(value), ensure_ascii=False)


class NamingFilters(Extension):
    """Registers the filters and tests above in Copier's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(
            slugify=slugify,
            to_identifier=to_identifier,
            is_slug=is_slug,
            is_identifier=is_identifier,
            is_email=is_email,
            is_hostname=is_hostname,
            bad_origins=bad_origins,
            split_origins=split_origins,
            sqlite_refusals=sqlite_refusals,
            sqlite_refusal_reason=sqlite_refusal_reason,
            ts_str=ts_str,
        )
