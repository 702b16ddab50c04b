"""The documentation builds with --strict, and the question reference covers copier.yml."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import BIN, ROOT, run


def test_docs_build_strict_with_every_question(tmp_path: Path) -> None:
    site = tmp_path / "site"
    run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=None)
    page = (site / "questions" / "index.html").read_text()
    questions = [name for name in yaml.safe_load((ROOT / "copier.yml").read_text()) if not name.startswith("_")]
    missing = [name for name in questions if f"<code>{name}</code>" not in page]
    assert not missing, f"question reference lacks {missing}"
    assert "<!-- questions -->" not in page
