"""`newsletter publish` and `newsletter init`: the static site and a new newsletter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, reporting, show


@app.command()
def publish(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", show_default=False, help="site folder (default ./site)")] = Path("site"),
    drafts: Annotated[bool, typer.Option("--drafts", help="also publish drafts and issues dated after today")] = False,
    config: ConfigOpt = None,
) -> None:
    """Build the static site: a page per issue, an archive index.html and an Atom feed.xml."""
    from newsletter_mailer.publish import publish as build_site
    from newsletter_mailer.settings import load_settings

    with reporting():
        settings, settings_dir = load_settings(config)
        report = build_site(settings, settings_dir, out, drafts=drafts)
    for path, why in report.left_out:
        typer.echo(f"left out {show(path)} ({why}; --drafts includes it)")
    for path in report.written:
        typer.echo(f"wrote {show(path)}")
    for path in report.removed:
        typer.echo(f"removed {show(path)}")
    if report.unchanged:
        typer.echo(f"unchanged: {len(report.unchanged)} file(s)")
    n = len(report.published)
    typer.echo(f"published {n} issue{'' if n == 1 else 's'} to {show(out)}/ "
               f"(open {show(out / 'index.html')}; online at {settings.web_base}/)")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", show_default=False, help="folder for the new newsletter, created if missing (default the current folder)")] = Path("."),
) -> None:
    """Create a new newsletter: newsletter.toml, a first issue, subscribers.csv and templates/."""
    from newsletter_mailer.initialise import initialise

    with reporting():
        result = initialise(directory)
    for path in result.created:  # as given: `init /tmp/charity` from /tmp says /tmp/charity, not charity
        typer.echo(f"created {path}")
    for path in result.existing:
        typer.echo(f"exists, left alone: {path}")
    if result.issue is not None:
        where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
        rel = result.issue.relative_to(result.root)
        issue = rel.as_posix()
        typer.echo("next: edit newsletter.toml, then preview the first issue with")
        typer.echo(f"  {where}newsletter compose {issue} --watch")
        typer.echo("then, in this order:")  # the README's tour: each step needs the one before
        for step in (f"newsletter test-send {issue}", f"newsletter send {issue} --list subscribers.csv",
                     "newsletter serve", f"newsletter report {issue}"):
            typer.echo(f"  {step}")
