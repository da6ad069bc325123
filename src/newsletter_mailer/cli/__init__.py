"""The `newsletter` command: one thin entry that turns every NewsletterError into one line.

Each group of commands is a module here that adds its commands to `app` when imported
(compose: compose, check, schema; send: send, test-send, status; report; serve; audience: list,
suppress, unsuppress, export, import; state: init, copy; secret: rotate; site: publish, init).
A new group (audience, serve, inbox, report, …) is one more module plus one line in
_COMMANDS. Heavy libraries are imported inside the commands: startup time is benchmarked.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from newsletter_mailer.cli.common import VERBOSE_HELP, accept_verbose_everywhere, flags, log_to_stderr
from newsletter_mailer.cli.usage import OneLineGroup

app = typer.Typer(
    name="newsletter",
    cls=OneLineGroup,
    help="Compose HTML email newsletters from YAML issues and send them to a list, exactly once each.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_COMMANDS = ("compose", "send", "report", "serve", "audience", "sequences", "inbox", "state", "secret", "site", "dkim", "doctor")  # command modules, in the order --help lists them


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"newsletter {version('newsletter-mailer')}")
        raise typer.Exit(0)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    version: Annotated[bool, typer.Option("--version", help="print the version and exit", is_eager=True,
                                          callback=_version, expose_value=False)] = False,
) -> None:
    flags.verbose = verbose  # set every time: in-process runs (tests) must not inherit it
    if verbose or flags.log_handler is not None:
        log_to_stderr(verbose)


for _module in _COMMANDS:
    importlib.import_module(f"{__name__}.{_module}")
accept_verbose_everywhere(app)


def main() -> None:
    import os

    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: anything in flight is recorded as uncertain; run the same command to resume",
                   err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("NEWSLETTER_DEBUG"):
            raise
        from newsletter_mailer.errors import one_line, redact

        typer.echo(redact(one_line(f"error: internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                                   "rerun with NEWSLETTER_DEBUG=1 for details and report it")), err=True)
        sys.exit(70)
