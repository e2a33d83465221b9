"""How bad input reaches the user: one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import click
import yaml

#: Exceptions that mean "the input was wrong", not "stalesim has a bug". pydantic's
#: ValidationError is a ValueError, and so are the kernels' argument checks.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, yaml.YAMLError)


def one_line(exc: BaseException) -> str:
    """The exception's message folded onto one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class InputErrorGroup(click.Group):
    """Mixin behaviour for the root group: turns input errors into exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except INPUT_ERRORS as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(2)
