"""What makes a render cheap in the test session (tests/conftest.py's render_template uses both).

- `cached_render()`: each answer set is rendered by Copier once per session, by whichever
  pytest-xdist worker asks first (flock-guarded, in a folder the workers share); every later call
  gets a copy of that pristine render, so a test may change its project freely.
- `memoize_jinja_compile()`: Copier builds a new Jinja environment for every render, so each
  render parsed and compiled the same ~700 template strings again (about two thirds of its CPU).
  Compiled code is kept per process, keyed by the preprocessed source and every setting of the
  environment that changes what the compiler emits; rendering still runs for every file.

tests/test_render_cache.py proves that what both hand out is byte for byte what Copier's own
command line renders in a fresh process.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Questions whose default is a plain value (no Jinja, no `when`): an answer equal to it renders
# what leaving it out renders, so both spell one key. Filled from copier.yml by conftest.
STATIC_DEFAULTS: dict[str, Any] = {}


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on path: one worker does a shared job while the others wait."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def static_defaults(copier_yml: dict[str, Any]) -> dict[str, Any]:
    return {
        name: spec["default"]
        for name, spec in copier_yml.items()
        if not name.startswith("_")
        and isinstance(spec, dict)
        and "default" in spec
        and "when" not in spec
        and "{" not in json.dumps(spec["default"])
    }


def answers_key(answers: dict[str, Any]) -> str | None:
    """The cache key of an answer set, or None when an answer is not plain JSON."""
    try:
        text = json.dumps({**STATIC_DEFAULTS, **answers}, sort_keys=True)
    except TypeError:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_render(cache: Path, answers: dict[str, Any], dest: Path, render: Callable[[], None]) -> Path:
    """dest holding the render of answers: Copier's own (render()) the first time in the session,
    else a copy of the one kept in cache. A render that raises is not kept."""
    key = answers_key(answers)
    if key is None:
        render()
        return dest
    pristine = cache / key
    with locked(cache / f"{key}.lock"):
        if not pristine.is_dir():
            render()
            partial = cache / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(dest, partial, symlinks=True)
            partial.rename(pristine)
            return dest
    shutil.copytree(pristine, dest, symlinks=True, dirs_exist_ok=True)
    return dest


def _environment_signature(env: Any) -> tuple[Any, ...]:
    """Every setting of a Jinja environment that changes the code its compiler emits."""

    def named(functions: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
        return tuple(
            sorted(
                (k, getattr(f, "__module__", "") or "", getattr(f, "__qualname__", "")) for k, f in functions.items()
            )
        )

    return (
        type(env),
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.trim_blocks,
        env.lstrip_blocks,
        env.newline_sequence,
        env.keep_trailing_newline,
        env.optimized,
        env.is_async,
        repr(env.autoescape),
        repr(env.finalize),
        env.undefined,
        # By name: copier-template-extensions loads the template's own classes anew per render.
        tuple(sorted((k, type(e).__module__, type(e).__qualname__) for k, e in env.extensions.items())),
        named(env.filters),  # the optimizer folds filters of constants at compile time
        named(env.tests),
    )


_COMPILED: dict[tuple[Any, ...], Any] = {}


def memoize_jinja_compile() -> None:
    """Keep Jinja's compiled code per process (see the module docstring). The extensions'
    preprocess hooks still run on every compile (Copier's yield tag resets its state there)."""
    import jinja2

    original = jinja2.Environment.compile
    if getattr(original, "memoized", False):
        return

    def compile(
        self: Any, source: Any, name: Any = None, filename: Any = None, raw: Any = False, defer_init: Any = False
    ) -> Any:
        if not isinstance(source, str):  # an already parsed template: nothing to keep
            return original(self, source, name, filename, raw, defer_init)
        key = (self.preprocess(source, name, filename), name, filename, raw, defer_init, _environment_signature(self))
        code = _COMPILED.get(key)
        if code is None:
            code = _COMPILED[key] = original(self, source, name, filename, raw, defer_init)
        return code

    compile.memoized = True  # type: ignore[attr-defined]
    jinja2.Environment.compile = compile  # type: ignore[method-assign,assignment]
