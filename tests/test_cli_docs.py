"""docs/cli.md, which the README links for every command's --help, matches the commands."""

from pathlib import Path

from stalesim.cli.help_docs import render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_command_reference_is_current() -> None:
    assert DOCS.read_text() == render(), (
        "docs/cli.md is stale: run `python -m stalesim.cli.help_docs > docs/cli.md`"
    )


def test_every_command_has_a_section() -> None:
    text = DOCS.read_text()
    for command in ("simulate", "presets", "bench sim", "bench kernels", "validate sweep", "fit"):
        assert f"## stalesim {command}\n" in text
