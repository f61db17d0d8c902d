"""Write docs/commands.md from the CLI's own `--help`, so the reference cannot drift.

Run: `.venv/bin/python docs/gen_commands.py` (`make docs` does); `--check` exits 1 when the
committed page differs from what the CLI says now.
"""

from __future__ import annotations

import sys
from pathlib import Path

PAGE = Path(__file__).with_name("commands.md")


def render() -> str:
    """The page: one section per command, its help as the CLI prints it."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    group = get_command(app)
    out = [
        "# Command reference",
        "",
        "Generated from `csdm COMMAND --help` by `docs/gen_commands.py`; "
        "[the command details](cli-details.md) say what each one does in depth.",
        "",
    ]
    for name in group.list_commands(None):
        text = runner.invoke(app, [name, "--help"], prog_name="csdm", terminal_width=100).output
        out += [f"## csdm {name}", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


def main() -> None:
    """Write the page, or with `--check` only compare it."""
    text = render()
    if "--check" in sys.argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run .venv/bin/python docs/gen_commands.py")
            sys.exit(1)
        return
    PAGE.write_text(text)


if __name__ == "__main__":
    main()
