"""The ``--help`` of every command as one Markdown page (``docs/cli.md``), so that the README can
link each command's help and a test can tell when the page has gone stale.

Regenerate with ``python -m stalesim.cli.help_docs > docs/cli.md``.
"""

from __future__ import annotations

import click
from stalesim.cli import main


def _walk(command: click.Command, path: list[str], ctx: click.Context | None):
    # The real CLI gets its settings (help option names, width) from the root group's
    # context_settings; children inherit them from their parent context.
    settings = dict(main.context_settings) if ctx is None else {}
    settings.update(terminal_width=100, max_content_width=100)
    sub_ctx = click.Context(command, info_name=path[-1], parent=ctx, **settings)
    yield path, command, sub_ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(sub_ctx):
            child = command.get_command(sub_ctx, name)
            if child is not None:
                yield from _walk(child, [*path, name], sub_ctx)


def anchor(path: list[str]) -> str:
    """The Markdown heading anchor of a command path, e.g. ``stalesim-bench-sim``."""
    return "-".join(path)


def render() -> str:
    """Markdown with one section per command: its usage line, options and subcommands."""
    parts = [
        "# Command reference",
        "",
        "Generated from the commands themselves by `python -m stalesim.cli.help_docs`; a test",
        "keeps it current.",
        "",
    ]
    for path, _command, ctx in _walk(main, ["stalesim"], None):
        parts += [f"## {' '.join(path)}", "", "```", ctx.get_help().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
