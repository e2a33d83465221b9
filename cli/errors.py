"""How bad input reaches the user: one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import click
import yaml

#: Exceptions that mean "the input was wrong", not "stalesim has a bug". pydantic's
#: ValidationError is a ValueError, and so are the kernels' argument checks.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, yaml.YAMLError)

#: Packages of the ``[train]`` extra: training, kernels and their benchmark need them (Ray:
#: the pipeline; the ``[ray]`` extra has Ray alone).
OPTIONAL_MODULES = frozenset({"torch", "triton", "ray"})


def one_line(exc: BaseException) -> str:
    """The exception's message folded onto one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class InputErrorGroup(click.Group):
    """Mixin behaviour for the root group: turns input errors into exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            if exc.name not in OPTIONAL_MODULES:
                raise
            extra = "'.[train]' (or '.[ray]' for Ray alone)" if exc.name == "ray" else "'.[train]'"
            click.echo(
                f"error: this command needs {exc.name}, which simulating and planning do not;"
                f" install it with: pip install -e {extra} (on a CPU-only machine run"
                " pip install torch==2.13.0 first)",
                err=True,
            )
            ctx.exit(2)
        except INPUT_ERRORS as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(2)
        except click.UsageError as exc:
            # a bad option of a command: one line naming it, like every other input error
            click.echo(f"error: {one_line(exc.format_message())}", err=True)
            ctx.exit(2)
