"""`newsletter publish` and `newsletter init`, added to the main app by register(app).

Heavy modules are imported inside the commands: the CLI's startup time matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _fail(exc) -> None:
    typer.echo(f"error: {exc.format()}", err=True)
    raise typer.Exit(exc.exit_code)


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def publish(
    out: Annotated[Path, typer.Option("--out", help="site folder")] = Path("site"),
    drafts: Annotated[bool, typer.Option("--drafts", help="also publish drafts and issues dated after today")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="settings file (default ./newsletter.toml)")] = None,
) -> None:
    """Build the static site: a page per issue, an archive index.html and an Atom feed.xml."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.publish import publish as build_site
    from newsletter_mailer.settings import load_settings

    try:
        settings, settings_dir = load_settings(config)
        report = build_site(settings, settings_dir, out, drafts=drafts)
    except NewsletterError as exc:
        _fail(exc)
    for path, why in report.left_out:
        typer.echo(f"left out {_show(path)} ({why}; --drafts includes it)")
    for path in report.written:
        typer.echo(f"wrote {_show(path)}")
    for path in report.removed:
        typer.echo(f"removed {_show(path)}")
    if report.unchanged:
        typer.echo(f"unchanged: {len(report.unchanged)} file(s)")
    n = len(report.published)
    typer.echo(f"published {n} issue{'' if n == 1 else 's'} to {_show(out)}/ "
               f"(open {_show(out / 'index.html')}; online at {settings.web_base}/)")


def init(
    directory: Annotated[Path, typer.Argument(help="folder for the new newsletter (created if missing)")] = Path("."),
) -> None:
    """Create a new newsletter: newsletter.toml, a first issue, subscribers.csv and templates/."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.initialise import initialise

    try:
        result = initialise(directory)
    except NewsletterError as exc:
        _fail(exc)
    for path in result.created:
        typer.echo(f"created {_show(path)}")
    for path in result.existing:
        typer.echo(f"exists, left alone: {_show(path)}")
    if result.issue is not None:
        where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
        rel = result.issue.relative_to(result.root)
        typer.echo("next: edit newsletter.toml, then preview the first issue with")
        typer.echo(f"  {where}newsletter compose {rel.as_posix()} --watch")


def register(app: typer.Typer) -> None:
    app.command()(publish)
    app.command()(init)
