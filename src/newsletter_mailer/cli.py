"""The `newsletter` command. Heavy libraries are imported inside the commands that use them.

Every NewsletterError becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="newsletter",
    help="Compose HTML email newsletters from YAML issues and send them to a list, exactly once each.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (default ./newsletter.toml)")]
IssueArg = Annotated[Path, typer.Argument(help="the issue file, e.g. issues/2020-09-cscp.yaml", show_default=False)]


def _fail(exc) -> None:
    typer.echo(f"error: {exc.format()}", err=True)
    raise typer.Exit(exc.exit_code)


def _echo_checks(checks) -> None:
    marks = {"ok": "  ok  ", "warning": "  warn", "error": "  ERROR"}
    for c in checks:
        typer.echo(f"{marks[c.level]} {c.message}")


@app.command()
def compose(
    issue: IssueArg,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default build/<slug>/)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the preview in a browser")] = False,
    config: ConfigOpt = None,
) -> None:
    """Compose an issue: email.html, email.txt, web.html and preview.html, plus the checks."""
    from newsletter_mailer.checks import errors, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.output import write_build
    from newsletter_mailer.settings import load_settings

    try:
        settings, settings_dir = load_settings(config)
        c = compose_issue(issue, settings, settings_dir)
        checks = run_checks(c)
        out_dir = out if out is not None else Path("build") / c.slug
        paths = write_build(c, checks, out_dir, settings_dir)
    except NewsletterError as exc:
        _fail(exc)
    for name, path in paths.items():
        typer.echo(f"wrote {path}")
    _echo_checks(checks)
    if open_:
        import webbrowser

        webbrowser.open(paths["preview.html"].resolve().as_uri())
    if errors(checks):
        raise typer.Exit(1)


@app.command()
def check(issue: IssueArg, config: ConfigOpt = None) -> None:
    """Validate and check an issue without writing anything; non-zero exit on errors."""
    from newsletter_mailer.checks import errors, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.settings import load_settings

    try:
        settings, settings_dir = load_settings(config)
        checks = run_checks(compose_issue(issue, settings, settings_dir))
    except NewsletterError as exc:
        _fail(exc)
    _echo_checks(checks)
    if errors(checks):
        typer.echo(f"error: {issue}: {len(errors(checks))} check(s) failed", err=True)
        raise typer.Exit(1)


@app.command()
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", help="write to a file instead of stdout")] = None,
) -> None:
    """Print the issue file format as JSON Schema (for YAML editors' autocompletion)."""
    import json

    from newsletter_mailer.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
