"""What every command module shares: option types, the one error printer, `reporting()`."""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", metavar="PATH", help="settings file (default ./newsletter.toml)")]
IssueArg = Annotated[Path, typer.Argument(metavar="ISSUE", help="the issue file, e.g. issues/2020-09-cscp.yaml", show_default=False)]
ListOpt = Annotated[Optional[Path], typer.Option("--list", metavar="CSV", help="subscribers CSV to send to (may be left out when the audience store has confirmed sign-ups)")]
ProviderOpt = Annotated[Optional[str], typer.Option("--provider", metavar="NAME", help="outbox | smtp | sendgrid (default delivery.provider)")]
OutboxOpt = Annotated[Optional[Path], typer.Option("--outbox", metavar="DIR", help="outbox folder (default outbox/ next to newsletter.toml)")]
StateOpt = Annotated[Optional[Path], typer.Option("--state", metavar="DIR", help="state folder: the ledger and the audience store (default .newsletter/ next to newsletter.toml)")]


class _Flags:
    """Set by the app's callback: --verbose also lists every further problem of an error."""

    verbose = False
    log_handler = None  # the --verbose log handler of the current run


flags = _Flags()

VERBOSE_HELP = "list every problem of an error; log retries and provider steps to stderr"


def log_to_stderr(verbose: bool) -> None:
    """--verbose: redacted log lines on stderr. One run's handler (and the stream it holds)
    never outlives the run, so in-process runs do not log into a closed stream."""
    import logging

    root = logging.getLogger("newsletter_mailer")
    if flags.log_handler is not None:
        root.removeHandler(flags.log_handler)
        flags.log_handler = None
    if verbose:
        from newsletter_mailer.errors import redact_log

        class Stderr(logging.StreamHandler):
            """Writes to whatever sys.stderr is when a line is logged, never a stale stream."""

            stream = property(lambda self: sys.stderr, lambda self, value: None)

        handler = Stderr()
        redact_log(handler)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        flags.log_handler = handler


def _verbose_after_the_command(value: bool) -> None:
    if value:
        flags.verbose = True
        log_to_stderr(True)


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP, callback=_verbose_after_the_command)]


@functools.lru_cache(maxsize=1)
def _verbose_param():
    """The shared --verbose option as typer makes it (once), not handed to the command's function."""
    probe = typer.Typer()

    @probe.command()
    def verbose(verbose: VerboseOpt = False) -> None:
        """Never run: only its option is taken."""

    [param] = [p for p in typer.main.get_command(probe).params if p.name == "verbose"]
    param.expose_value = False
    return param


class _PlainArgument(TyperArgument):
    """An argument as help usually writes it: ISSUE, [ISSUE] when optional, ADDR... when repeated;
    not typer's {ISSUE} and `ADDR <list[str]>`."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self._usage_display_name()

    def display_type(self, ctx) -> str:
        return ""


class _VerboseCommand(TyperCommand):
    """A command that also takes --verbose/-v after its name: the error hint says `--verbose`, and
    `newsletter check x.yaml --verbose` is what a user types. It sets the same flag as the global one.
    Its arguments show in help as _PlainArgument does (typer takes no argument class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _PlainArgument
        self.params.append(_verbose_param())


def accept_verbose_everywhere(app: typer.Typer) -> None:
    """Every command of the app and of its groups takes --verbose/-v too."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = _VerboseCommand
    for group in app.registered_groups:
        accept_verbose_everywhere(group.typer_instance)


def fail(exc) -> None:
    """The one error printer: a NewsletterError as one redacted line, then its exit code.

    With --verbose, each further problem found in the same pass follows on a line of its own.
    """
    from newsletter_mailer.errors import redact

    lines = exc.all_lines() if flags.verbose else [exc.format()]
    for line in lines:
        typer.echo(redact(f"error: {line}"), err=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def reporting() -> Iterator[None]:
    """`with reporting():` around a command's work: a NewsletterError leaves through fail()."""
    from newsletter_mailer.errors import NewsletterError

    try:
        yield
    except NewsletterError as exc:
        fail(exc)


def confirm(question: str, yes: bool, action: str, declined: str) -> None:
    """Ask before something that cannot be undone (unless --yes); "n" says `declined` and exits 0 (the
    user's answer, not a failure); with no terminal to ask, one line asking for --yes (exit 2)."""
    from newsletter_mailer.errors import NewsletterError

    if yes:
        return
    if not sys.stdin.isatty():
        raise NewsletterError(f"no terminal to confirm the {action}: pass --yes to {action} without asking")
    if not typer.confirm(question, default=False):
        typer.echo(declined)
        raise typer.Exit(0)


def settings_and_state(config: Optional[Path], state: Optional[Path], *, issue: Optional[Path] = None,
                       settings_optional: bool = False):
    """(settings, settings_dir, State): the settings (found near `issue` when given) and the command's
    one state handle, resolved once here and passed down. With settings_optional, --state and no
    settings file give (None, None, State) and only NEWSLETTER_DATABASE_URL can name a database."""
    import os

    from newsletter_mailer.settings import load_settings
    from newsletter_mailer.state.handle import State

    if settings_optional and state is not None and config is None and not Path("newsletter.toml").exists():
        return None, None, State.resolve(None, None, os.environ, state)
    settings, settings_dir = load_settings(config, issue)
    return settings, settings_dir, State.resolve(settings, settings_dir, os.environ, state)


def show(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def listing(emails: list[str], limit: int = 20) -> str:
    shown = ", ".join(emails[:limit])
    return shown + (f" … and {len(emails) - limit} more" if len(emails) > limit else "")
