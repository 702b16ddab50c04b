"""MkDocs hook: builds the question reference from copier.yml, so it never drifts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COPIER_YML = Path(__file__).resolve().parents[2] / "copier.yml"
MARKER = "<!-- questions -->"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _choices(spec: dict[str, Any]) -> str:
    choices = spec.get("choices")
    if choices is None:
        return "yes / no" if spec["type"] == "bool" else "free text"
    if isinstance(choices, dict):
        return "<br>".join(f"`{value}`: {_cell(label)}" for label, value in choices.items())
    return ", ".join(f"`{value}`" for value in choices)


def questions_table() -> str:
    data = yaml.safe_load(COPIER_YML.read_text())
    rows = ["| question | what it asks | answers | default | asked when |", "| --- | --- | --- | --- | --- |"]
    for name, spec in data.items():
        if name.startswith("_"):
            continue
        default = spec.get("default")
        default_text = f"`{_cell(default)}`" if default not in ("", None, []) else "(empty)"
        multi = " (several)" if spec.get("multiselect") else ""
        when = f"`{_cell(spec['when'])}`" if "when" in spec else "always"
        rows.append(f"| `{name}` | {_cell(spec.get('help', ''))} | {_choices(spec)}{multi} | {default_text} | {when} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, questions_table())
    return markdown
