"""Jinja filters and tests that copier.yml uses to derive defaults and validate answers.

Kept free of Copier imports so tests can call the functions directly.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import shlex
import sys
import tempfile
import textwrap
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, pass_context
from jinja2.ext import Extension
from jinja2.runtime import Context

# Every pattern is matched against the whole value (re.fullmatch): `$` would accept a trailing
# newline. The character classes are ASCII-only on purpose.
SLUG_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
IDENTIFIER_RE = re.compile(r"[a-z][a-z0-9_]*")
EMAIL_RE = re.compile(r"[A-Za-z0-9.!#%&'*+/=?^_{|}~-]+@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
ORIGIN_RE = re.compile(r"(?i:https?)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:([0-9]{1,5}))?")
AWS_REGION_RE = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]")
SLUG_MAX = 40
# ruff's line length in the generated project (derive() passes it to the templates too).
LINE_LENGTH = 100

# Why SQLite cannot run on a platform: several replicas share no file, or the disk is ephemeral.
SQLITE_REFUSED = {
    "digitalocean": "App Platform containers have no persistent disk",
    "aws_ecs": "Fargate tasks have ephemeral storage and the service runs several tasks",
    "kubernetes": "the Deployment runs several replicas that cannot share one SQLite file",
    "aws_eb": "Elastic Beanstalk runs several instances and replaces them on every deploy, losing the file",
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


def is_slug(value: object) -> bool:
    return isinstance(value, str) and bool(SLUG_RE.fullmatch(value)) and len(value) <= SLUG_MAX


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and bool(IDENTIFIER_RE.fullmatch(value)) and not keyword.iskeyword(value)


def is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LENGTHS["author_email"] and bool(EMAIL_RE.fullmatch(value))


def is_hostname(value: object) -> bool:
    """A lowercase DNS name with a dot (what a Kubernetes Ingress host and a certificate take)."""
    return isinstance(value, str) and bool(HOSTNAME_RE.fullmatch(value))


def is_aws_region(value: object) -> bool:
    return isinstance(value, str) and bool(AWS_REGION_RE.fullmatch(value))


def split_origins(value: str) -> list[str]:
    """The entries of a comma-separated list, without the spaces around them."""
    return [item.strip(" ") for item in value.split(",") if item.strip(" ")]


def bad_origins(value: str) -> list[str]:
    """The entries of a comma-separated origin list that are not scheme://host[:port]."""
    bad = []
    for item in split_origins(value):
        match = ORIGIN_RE.fullmatch(item)
        if not match or (match.group(4) and not 0 < int(match.group(4)) <= 65535):
            bad.append(json.dumps(item))
    return bad


def normalize_origins(value: str) -> list[str]:
    """The origins as a browser sends them: scheme and host lowercase (ports kept)."""
    return [item.lower() for item in split_origins(value) if ORIGIN_RE.fullmatch(item)]


def sqlite_refusals(platforms: Iterable[str], database: str) -> list[str]:
    """Chosen platforms on which the chosen database cannot work (only SQLite has limits)."""
    if database != "sqlite":
        return []
    return [p for p in platforms if p in SQLITE_REFUSED]


def sqlite_refusal_reason(platforms: Iterable[str], database: str) -> str:
    reasons = [f"{SQLITE_REFUSED[p]}." for p in sqlite_refusals(platforms, database)]
    return " ".join(r[0].upper() + r[1:] for r in reasons)


# ---------------------------------------------------------------------------------------------
# One rule for every free-text answer, and one filter per format an answer is written into
# ---------------------------------------------------------------------------------------------
# Characters no answer may hold: controls (\n, \r, \t, NUL, DEL, ...), format characters
# (zero-width, bidi overrides), line and paragraph separators (U+2028/9), surrogates, private
# use and unassigned code points. Each of them either ends a line in some format or hides text.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Longest answer accepted for each free-text question (copier.yml's validators use these).
MAX_LENGTHS = {
    "project_name": 60,
    "description": 200,
    "author_name": 100,
    "author_email": 254,
    "domain": 253,
    "cors_origins": 1000,
}
# Words YAML 1.1 reads as a boolean or null when unquoted (PyYAML, older Kubernetes tooling).
YAML_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
# Standard-library modules removed in 3.12 and 3.13 (the project may run on 3.11), which
# sys.stdlib_module_names of a newer interpreter no longer lists.
REMOVED_STDLIB = frozenset(
    {
        "asynchat", "asyncore", "distutils", "imp", "smtpd", "aifc", "audioop", "cgi", "cgitb",
        "chunk", "crypt", "imghdr", "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev",
        "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
    }
)  # fmt: skip
# Import names and distribution names (normalised with "_") of everything the generated
# project can depend on, with every extra and dev tool: a package or a distribution of the same
# name would shadow it or make `uv lock` fail ("depends on itself"). tests/test_answers.py checks
# this list against the environment of a project rendered with every option.
DEPENDENCY_NAMES = frozenset(
    {
        "aiomysql", "aiosqlite", "alembic", "amqp", "annotated_doc", "annotated_types", "anyio",
        "arq", "asgi_lifespan", "asyncpg", "billiard", "celery", "certifi", "cffi", "click",
        "click_didyoumean", "click_plugins", "click_repl", "colorama", "cryptography", "dateutil",
        "dotenv", "exceptiongroup", "fastapi", "greenlet", "gunicorn", "h11", "hiredis", "httpcore",
        "httptools", "httpx", "idna", "iniconfig", "kombu", "mako", "markupsafe", "packaging",
        "pluggy", "prometheus_client", "prompt_toolkit", "pycparser", "pydantic", "pydantic_core",
        "pydantic_settings", "pygments", "pymysql", "pytest", "python_dateutil", "python_dotenv",
        "python_multipart", "multipart", "pyyaml", "yaml", "redis", "ruff", "sentry_sdk", "six",
        "sniffio", "sqlalchemy", "starlette", "typing_extensions", "typing_inspection", "tzdata",
        "urllib3", "uv", "uv_build", "uvicorn", "uvicorn_worker", "uvloop", "vine", "watchfiles",
        "wcwidth", "websockets", "wrapt", "pyjwt", "jwt", "opentelemetry", "opentelemetry_api", "py",
        "tzlocal", "docs", "examples", "mypy", "mypyc", "mypy_extensions", "librt", "ast_serialize",
        "pathspec", "celery_types", "amqp_stubs", "billiard_stubs", "celery_stubs",
        "django_celery_results_stubs", "ephem_stubs", "kombu_stubs", "vine_stubs",
    }
)  # fmt: skip
TEST_PACKAGES = frozenset({"test", "tests"})


def control_characters(value: str) -> list[str]:
    """The characters of value that no answer may hold, as U+XXXX names (in order, once each)."""
    found: list[str] = []
    for char in value:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            name = f"U+{ord(char):04X}"
            if name not in found:
                found.append(name)
    return found


def text_error(value: object, field: str, max_length: int | None = None, *, required: bool = False) -> str:
    """The one rule for a free-text answer, as copier.yml's message ("" when the value is fine)."""
    if not isinstance(value, str):
        return f"{field} must be text, not {type(value).__name__}."
    bad = control_characters(value)
    if bad:
        return (
            f"{field} holds control or invisible characters ({', '.join(bad[:5])}): "
            "type it on one line with visible characters only."
        )
    if required and not value.strip():
        return f"{field} is empty: fill it in."
    limit = max_length if max_length is not None else MAX_LENGTHS.get(field)
    if limit is not None and len(value) > limit:
        return f"{field} is {len(value)} characters long: keep it to {limit} or fewer."
    if value != value.strip():
        return f"{field} starts or ends with spaces: remove them."
    if re.search(r"\\([\"'$\\]|\Z)", value):
        return (
            f"{field} has a backslash before a quote, a $, another backslash or at its end, which the "
            "image's labels cannot hold: remove that backslash."
        )
    return ""


def shown(value: object) -> str:
    """An answer quoted for an error message, control characters visible as escapes."""
    return json.dumps(str(value))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def reserved_reason(name: str) -> str:
    """Why a package or distribution name cannot be used ("" when it can)."""
    normal = _normal(name)
    if name.lower() in YAML_RESERVED:
        return "is a YAML boolean or null, which deploy files would read as true/false/null"
    if normal in TEST_PACKAGES:
        return "is the name of the project's test package"
    if normal in sys.stdlib_module_names or normal in REMOVED_STDLIB:
        return "is a Python standard-library module, which the package would shadow"
    if normal in DEPENDENCY_NAMES:
        return "is the name of one of the project's dependencies, which the package would shadow"
    return ""


def name_error(value: object, field: str) -> str:
    """copier.yml's message for a reserved slug or package name ("" when it is free)."""
    if not isinstance(value, str):
        return ""
    reason = reserved_reason(value)
    if not reason:
        return ""
    sep = "-" if field == "project_slug" else "_"
    return f'{field} "{value}" {reason}: choose another name, for example "{value.lower()}{sep}service".'


def _checked(value: object) -> str:
    """A rendered answer passes the rule once more (answers edited into .copier-answers.yml)."""
    text = "" if value is None else str(value)
    bad = control_characters(text)
    if bad:
        raise ValueError(f"refusing to render an answer holding {', '.join(bad)}: {text!r}")
    return text


def json_str(value: object) -> str:
    """A JSON string literal."""
    return json.dumps(_checked(value), ensure_ascii=False)


def yaml_str(value: object) -> str:
    """A double-quoted YAML scalar: always a string, whatever the text (yes, null, 1e3, #, :)."""
    return json.dumps(_checked(value), ensure_ascii=False)


def toml_str(value: object) -> str:
    """A TOML basic string."""
    return json.dumps(_checked(value), ensure_ascii=False)


def sh_word(value: object) -> str:
    """One shell word, single-quoted where needed: never expanded, never split."""
    return shlex.quote(_checked(value))


def dockerfile_str(value: object) -> str:
    """A Dockerfile word for LABEL or ENV that Docker and hadolint read the same.

    Single-quoted (literal) unless the text holds a single quote; then double-quoted with `"`
    and `$` escaped. text_error refuses the one thing neither form holds: a backslash before a
    quote, a `$`, another backslash or the end.
    """
    text = _checked(value)
    if re.search(r"\\([\"'$\\]|\Z)", text):
        raise ValueError(f"refusing to render {text!r} in a Dockerfile: a backslash before a quote or at the end")
    if "'" not in text:
        return f"'{text}'"
    return '"' + text.replace('"', '\\"').replace("$", "\\$") + '"'


def comment(value: object) -> str:
    """Text for a comment in any format: one line, so nothing after it is ever code."""
    return _checked(value)


def line(value: object) -> str:
    """Plain text on one line (a licence, a YAML block scalar): the rule checked once more."""
    return _checked(value)


def token(value: object) -> str:
    """A validated bare word (hostname, region): letters, digits, dots and hyphens only.

    Such a word needs no quoting in shell, YAML, nginx or Markdown; anything else is refused.
    """
    text = _checked(value)
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text):
        raise ValueError(f"refusing to render {text!r} where a hostname or region belongs")
    return text


def md_text(value: object) -> str:
    """Markdown inline text: the characters Markdown would read as markup are escaped."""
    return re.sub(r"([\\`*_\[\]<>|#~])", r"\\\1", _checked(value))


def env_value(value: object) -> str:
    """A value of a .env file line, read the same by Compose and python-dotenv."""
    text = _checked(value)
    if re.fullmatch(r"[A-Za-z0-9_.,:/@+=-]*", text):
        return text
    if "'" in text:  # single quotes are literal in both readers, and cannot be escaped
        raise ValueError(f"a .env value cannot hold a single quote: {text!r}")
    return f"'{text}'"


def _py_escape(text: str, quote: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif char == quote:
            out.append("\\" + quote)
        elif code < 0x80:
            out.append(char)
        elif code <= 0xFFFF:  # escaped: ruff flags ambiguous Unicode (RUF001) in literals
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _py_literal(text: str) -> str:
    # The quote ruff format keeps: double, unless single quotes need fewer escapes.
    quote = "'" if text.count('"') > text.count("'") else '"'
    return quote + _py_escape(text, quote) + quote


def _chunks(text: str, width: int) -> list[str]:
    """Split text into pieces whose literals fit in width, breaking after spaces where possible."""
    pieces: list[str] = []
    rest = text
    while rest:
        cut = len(rest)
        while cut > 1 and len(_py_literal(rest[:cut])) > width:
            space = rest.rfind(" ", 0, cut - 1)
            cut = space + 1 if space > 0 else cut - 1
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return pieces


def py_str(value: object, column: int = 0, indent: int = 0, width: int = LINE_LENGTH) -> str:
    """A Python string literal that starts at `column` and ends before a comma on that line.

    Too long for the line, it becomes parenthesised implicit concatenation, one piece per line at
    indent + 4, which ruff format keeps as it is (it joins pieces only when the joined text fits).
    """
    text = _checked(value)
    literal = _py_literal(text)
    if column + len(literal) + 1 <= width:
        return literal
    inner = " " * (indent + 4)
    pieces = _chunks(text, width - len(inner))
    return "(\n" + "".join(f"{inner}{_py_literal(p)}\n" for p in pieces) + " " * indent + ")"


def py_docstring(value: object, indent: int = 0, width: int = LINE_LENGTH) -> str:
    """A triple-quoted docstring holding value, wrapped to the line length."""
    text = _py_escape(_checked(value), '"')
    if indent + len(text) + 6 <= width:
        return f'"""{text}"""'
    # Each line fits after the indent, the opening quotes and an escape moved from the line before.
    lines = textwrap.wrap(text, width - indent - 13, break_long_words=True, break_on_hyphens=False)
    # A line break inside an escape sequence would change the text: keep escapes whole.
    lines = _rejoin_escapes(lines)
    pad = " " * indent
    return '"""' + lines[0] + "\n" + "".join(f"{pad}{line}\n" for line in lines[1:]) + f'{pad}"""'


def _rejoin_escapes(lines: list[str]) -> list[str]:
    fixed: list[str] = []
    carry = ""
    for line in lines:
        line = carry + line
        carry = ""
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:  # ends inside "\\" or "\\u...": move the backslash to the next line
            line, carry = line[:-1], "\\"
        match = re.search(r"\\(u[0-9a-f]{0,3}|U[0-9a-f]{0,7})$", line)
        if match and not line[: match.start()].endswith("\\"):
            line, carry = line[: match.start()], line[match.start() :] + carry
        fixed.append(line)
    if carry:
        fixed.append(carry)
    return [line for line in fixed if line]


def status_path(project_root: object) -> Path:
    """tasks/common.py's status_path (same formula; tests/test_answers.py checks they agree)."""
    key = hashlib.sha256(str(Path(str(project_root)).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"fastapi-deploy-status-{key}.json"


def failed_steps(project_root: object) -> list[str] | None:
    """The steps the copy's tasks reported as failed ([] when none), None when they did not run.

    Read once, for Copier's closing message, then removed.
    """
    path = status_path(project_root)
    try:
        failed = json.loads(path.read_text(encoding="utf-8")).get("failed", [])
    except (OSError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return [str(name) for name in failed]


@pass_context
def _py_str(context: Context, value: object, column: int = 0, indent: int = 0) -> str:
    return py_str(value, column, indent, int(context.get("line_length") or LINE_LENGTH))


@pass_context
def _py_docstring(context: Context, value: object, indent: int = 0) -> str:
    return py_docstring(value, indent, int(context.get("line_length") or LINE_LENGTH))


FORMAT_FILTERS: dict[str, Any] = {
    "json_str": json_str,
    "yaml_str": yaml_str,
    "toml_str": toml_str,
    "sh_word": sh_word,
    "dockerfile_str": dockerfile_str,
    "comment": comment,
    "line": line,
    "token": token,
    "md_text": md_text,
    "env_value": env_value,
    "py_str": _py_str,
    "py_docstring": _py_docstring,
}


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
            is_aws_region=is_aws_region,
            normalize_origins=normalize_origins,
            text_error=text_error,
            name_error=name_error,
            shown=shown,
            failed_steps=failed_steps,
            **FORMAT_FILTERS,
        )
