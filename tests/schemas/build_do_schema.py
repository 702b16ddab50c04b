"""Build the DigitalOcean App Platform app-spec JSON Schema from DigitalOcean's OpenAPI description.

    python tests/schemas/build_do_schema.py PATH/TO/digitalocean-openapi [--commit SHA] [--date YYYY-MM-DD]
    python tests/schemas/build_do_schema.py --strict-only   # rebuild the strict file from the open one

PATH is a checkout (or an unpacked archive) of github.com/digitalocean/openapi. The script starts at
specification/resources/apps/models/app_spec.yml, follows every `$ref` it reaches and writes, next
to itself:

- do-app-spec.schema.json: one JSON Schema (Draft 2020-12), every referenced model under `$defs`
  named after its file. OpenAPI-only keywords (`example`, `nullable`, `x-*`, ...) are dropped; the
  objects stay as open as DigitalOcean's model leaves them.
- do-app-spec.strict.schema.json: the same with `unevaluatedProperties: false` on every object, so a
  misspelled key anywhere is an error. DigitalOcean composes models with `allOf` (a service is
  component base + instance base + its own keys; service autoscaling adds to worker autoscaling's
  `metrics`), and a closed part would refuse its siblings' keys, so each `allOf` is folded into one
  object first.

Two top-level keys that DigitalOcean's app spec reference documents are missing from the OpenAPI
AppSpec model; ADDITIONS below puts them back in OpenAPI form, so they go through the same
conversion.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OPEN = HERE / "do-app-spec.schema.json"
STRICT = HERE / "do-app-spec.strict.schema.json"
ENTRY = Path("specification/resources/apps/models/app_spec.yml")
UPSTREAM = "https://github.com/digitalocean/openapi"

# Documented in "Reference for App Specification" (docs.digitalocean.com/products/app-platform/
# reference/app-spec/, whose example app spec starts with both) but absent from the AppSpec model.
# The alert entries use the model the OpenAPI description already has for component alerts.
ADDITIONS: dict[str, Any] = {
    "alerts": {
        "description": "Alert policies for the whole app (app spec reference; not in the OpenAPI AppSpec model).",
        "type": "array",
        "items": {"$ref": "app_alert_spec.yml"},
    },
    "features": {
        "description": "Feature flags such as `buildpack-stack=ubuntu-22` (app spec reference; not in the OpenAPI "
        "AppSpec model).",
        "type": "array",
        "items": {"type": "string"},
    },
}

# OpenAPI 3.0 keywords that JSON Schema does not have (or that only document a value).
DROPPED = {"example", "examples", "nullable", "discriminator", "xml", "externalDocs"}
# Keywords whose value is a map of names to schemas / a list of schemas / one schema.
SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else")


class Bundler:
    """Loads OpenAPI model files and rewrites their file `$ref`s into `#/$defs/<file stem>`."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self.sources: dict[str, Path] = {}

    def load(self, path: Path) -> Any:
        return yaml.safe_load(path.read_text(encoding="utf-8"))

    def ref(self, target: str, base: Path) -> str:
        file_part, _, pointer = target.partition("#")
        if not file_part:
            raise SystemExit(f"{base}: local $ref {target!r} is not supported")
        path = (base.parent / file_part).resolve()
        name = path.stem.replace(" ", "_")
        if pointer:
            name += "__" + pointer.strip("/").replace("/", "__")
        if name in self.sources and self.sources[name] != path:
            raise SystemExit(f"two models map to $defs/{name}: {self.sources[name]} and {path}")
        if name not in self.sources:
            self.sources[name] = path
            node = self.load(path)
            for part in filter(None, pointer.strip("/").split("/")):
                node = node[part]
            self.defs[name] = None  # reserve the name before recursing (cycles)
            self.defs[name] = self.convert(node, path)
        return f"#/$defs/{name}"

    def convert(self, node: Any, base: Path) -> Any:
        if isinstance(node, list):
            return [self.convert(item, base) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DROPPED or key.startswith("x-"):
                continue
            if key == "$ref":
                out[key] = self.ref(value, base)
            elif key in SCHEMA_MAPS:
                out[key] = {name: self.convert(sub, base) for name, sub in value.items()}
            elif key in SCHEMA_LISTS:
                out[key] = [self.convert(sub, base) for sub in value]
            elif key in SCHEMA_ONE and isinstance(value, dict):
                out[key] = self.convert(value, base)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                # OpenAPI 3.0's boolean form qualifies minimum/maximum; 2020-12 wants the number.
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if value:
                    out[key] = node[bound]
                    out.pop(bound, None)
            elif key in ("minimum", "maximum") and node.get("exclusive" + key.capitalize()) is True:
                continue
            else:
                out[key] = value  # description, type, enum, pattern, default, format, required, ...
        return out


def build_open(checkout: Path, commit: str, date: str) -> dict[str, Any]:
    entry = checkout / ENTRY
    if not entry.is_file():
        raise SystemExit(f"{entry} not found: pass the root of a digitalocean/openapi checkout")
    bundler = Bundler()
    root = bundler.load(entry)
    clash = sorted(set(ADDITIONS) & set(root["properties"]))
    if clash:
        raise SystemExit(f"the OpenAPI AppSpec now has {clash}: drop them from ADDITIONS in {Path(__file__).name}")
    root["properties"].update(copy.deepcopy(ADDITIONS))
    body = bundler.convert(root, entry.resolve())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{UPSTREAM}/blob/{commit}/{ENTRY.as_posix()}",
        "$comment": f"Generated by tests/schemas/build_do_schema.py from {UPSTREAM} at {commit} ({date}). "
        "Do not edit: regenerate.",
        **body,
        "$defs": dict(sorted(bundler.defs.items())),
    }


def _is_object(node: Any) -> bool:
    return isinstance(node, dict) and (node.get("type") == "object" or "properties" in node)


def _resolved(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` replaced by a copy of its target (with any sibling keywords merged in)."""
    if "$ref" not in node:
        return node
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    target = copy.deepcopy(defs[node["$ref"].removeprefix("#/$defs/")])
    return _merge(_flat(target, defs), siblings, defs)


def _merge(a: dict[str, Any], b: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One schema that says what `allOf: [a, b]` says, for the object models DigitalOcean composes."""
    out = dict(a)
    for key, value in b.items():
        if key not in out or out[key] == value:
            out[key] = value
        elif key == "properties":
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = _merge_property(props[name], sub, defs) if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = out[key] + [name for name in value if name not in out[key]]
        elif key in ("description", "title", "default", "deprecated"):
            continue  # annotations: the first part's wording stands
        else:
            raise SystemExit(f"cannot merge {key!r}: {out[key]!r} and {value!r}")
    return out


def _merge_property(a: Any, b: Any, defs: dict[str, Any]) -> Any:
    if a == b:
        return a
    flat_a, flat_b = _flat(_resolved(a, defs), defs), _flat(_resolved(b, defs), defs)
    if _is_object(flat_a) and _is_object(flat_b):
        return _merge(flat_a, flat_b, defs)
    return {"allOf": [a, b]}


def _flat(node: Any, defs: dict[str, Any]) -> Any:
    """`allOf` folded into one schema (each part resolved), so an object's keys are in one place."""
    if not isinstance(node, dict) or "allOf" not in node:
        return node
    out = {k: v for k, v in node.items() if k != "allOf"}
    for part in node["allOf"]:
        out = _merge(out, _flat(_resolved(part, defs), defs), defs)
    return out


def _close(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_close(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _flat(node, defs)
    out = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {name: _close(sub, defs) for name, sub in value.items()}
        elif key in SCHEMA_LISTS or (key in SCHEMA_ONE and isinstance(value, dict)):
            out[key] = _close(value, defs)
        else:
            out[key] = value
    if _is_object(out) and "additionalProperties" not in out:
        out["unevaluatedProperties"] = False
    return out


def _refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"].removeprefix("#/$defs/")} if "$ref" in node else set()
    return found.union(*(_refs(v) for k, v in node.items() if k != "$ref"))


def build_strict(open_schema: dict[str, Any]) -> dict[str, Any]:
    """Every `allOf` folded, then every object closed with `unevaluatedProperties: false`.

    Folding first matters: DigitalOcean builds a service from three models and its autoscaling from
    two that both define `metrics`; closing the parts one by one would refuse the siblings' keys.
    """
    defs = open_schema["$defs"]
    strict = _close(open_schema, defs)
    if any(_is_object(part) for part in _walk_all_of(strict)):
        raise SystemExit("an object is still composed with allOf after folding: the strict file would be wrong")
    # Keep the models the root still reaches (the folded parts were copied into their users).
    reached: set[str] = set()
    todo = _refs({k: v for k, v in strict.items() if k != "$defs"})
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo |= _refs(strict["$defs"][name]) - reached
    strict["$defs"] = {name: sub for name, sub in strict["$defs"].items() if name in reached}
    strict["$comment"] = open_schema["$comment"].replace(
        "Do not edit", "Strict variant: allOf folded, unevaluatedProperties false on every object. Do not edit"
    )
    return strict


def _walk_all_of(node: Any) -> list[Any]:
    if isinstance(node, list):
        return [p for item in node for p in _walk_all_of(item)]
    if not isinstance(node, dict):
        return []
    return list(node.get("allOf", [])) + [p for v in node.values() for p in _walk_all_of(v)]


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _git_commit(checkout: Path) -> tuple[str, str] | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "log", "-1", "--format=%H %cs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", nargs="?", type=Path, help="root of a digitalocean/openapi checkout")
    parser.add_argument("--commit", help="the checkout's commit (read with git when omitted)")
    parser.add_argument("--date", help="the commit's date, YYYY-MM-DD (read with git when omitted)")
    parser.add_argument("--strict-only", action="store_true", help="rebuild only the strict file from the open one")
    args = parser.parse_args(argv)
    if args.strict_only:
        open_schema = json.loads(OPEN.read_text(encoding="utf-8"))
    else:
        if args.checkout is None:
            parser.error("pass the checkout path, or --strict-only")
        found = _git_commit(args.checkout)
        commit = args.commit or (found and found[0])
        date = args.date or (found and found[1])
        if not commit or not date:
            parser.error("the checkout is not a git work tree: pass --commit and --date")
        open_schema = build_open(args.checkout, commit, date)
        OPEN.write_text(dump(open_schema), encoding="utf-8")
    STRICT.write_text(dump(build_strict(open_schema)), encoding="utf-8")
    print(f"wrote {OPEN.name} and {STRICT.name} ({len(open_schema['$defs'])} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
