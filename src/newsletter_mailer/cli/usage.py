"""Usage errors (an unknown option, a misspelt command, a missing argument) in the tool's one-line
style, `error: … (hint)` and exit 2, for every command at once; a bare group prints its help, exit 0.

The top group's make_context and invoke parse every command and subcommand below it, so catching
click's UsageError there covers the whole app; click would print a three-line block instead.
Typer vendors click (typer._click): its exceptions, not the click package's, are the ones raised.
"""

from __future__ import annotations


import typer
from typer._click import exceptions as click  # typer parses with its own copy of click (0.2x)
from typer.core import TyperGroup


class OneLineUsage(click.UsageError):
    """A click usage error shown as one `error:` line with a hint, like a NewsletterError."""

    def __init__(self, cause: click.UsageError):
        super().__init__(cause.format_message(), cause.ctx)
        self.line = _line(cause)

    def show(self, file=None) -> None:
        from newsletter_mailer.errors import redact

        typer.echo(redact(f"error: {self.line}"), err=True)


def _line(exc: click.UsageError) -> str:
    from newsletter_mailer.errors import one_line

    ctx = exc.ctx
    path = ctx.command_path if ctx is not None else "newsletter"
    hint = f"`{path} --help` lists what it takes"
    if isinstance(exc, click.NoSuchOption):
        message, close = f"no such option {exc.option_name}", (exc.possibilities or [])[:1]
    else:
        message, _, suggestion = exc.format_message().strip().partition(" Did you mean ")
        message = message.rstrip(".")
        close = [suggestion.rstrip("?")] if suggestion else []
    if close:
        hint = f"did you mean {close[0]}? " + hint
    return one_line(f"{path}: {message[:1].lower()}{message[1:]} ({hint})")


def _help_and_exit(exc: click.NoArgsIsHelpError) -> None:
    """`newsletter` or `newsletter audience` alone: the help is what was asked for, not an error."""
    typer.echo(exc.ctx.get_help())
    raise typer.Exit(0)


class OneLineGroup(TyperGroup):
    """The app's top group: every usage error below it leaves as OneLineUsage."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.NoArgsIsHelpError as exc:
            _help_and_exit(exc)
        except click.UsageError as exc:
            raise OneLineUsage(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OneLineUsage:
            raise
        except click.NoArgsIsHelpError as exc:
            _help_and_exit(exc)
        except click.UsageError as exc:
            raise OneLineUsage(exc) from None
