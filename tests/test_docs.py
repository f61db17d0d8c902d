"""The docs a newcomer reads: a short README whose links resolve, and a current reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _links(md: Path) -> list[str]:
    return [t for t in LINK.findall(md.read_text()) if "://" not in t]


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text()) <= 15_000
    for doc in (readme, ROOT / "DESIGN.md", ROOT / "agent" / "README.md"):
        missing = [t for t in _links(doc) if not (doc.parent / t).exists()]
        assert missing == [], f"{doc.name}: {missing}"
    assert "docs/commands.md" in _links(readme)


def test_command_reference_is_the_cli_help() -> None:
    p = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_commands.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    page = (ROOT / "docs" / "commands.md").read_text()
    for command in ("process", "export-diamond", "views", "train", "register"):
        assert f"## csdm {command}\n" in page
