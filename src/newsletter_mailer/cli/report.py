"""`newsletter report [ISSUE]`: how an issue did (or every issue), as a table here and a page on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting, show


@app.command()
def report(
    issue: Annotated[Optional[Path], typer.Argument(metavar="[ISSUE]", help="the issue file; without it, every issue", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE", help="write the report page here (default build/<slug>/report.html, or build/report.html)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the page in the browser")] = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """How an issue did: the ledger, readers' responses and SendGrid's numbers, with charts."""
    import os

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.report import numbers as r
    from newsletter_mailer.report.page import archive_lines, archive_page, headline, issue_page, write_page

    with reporting():
        settings, settings_dir, st = settings_and_state(config, state)
        if issue is None:
            rows = r.archive(settings_dir, st)
            page, target = archive_page(rows, settings_dir), out or settings_dir / "build" / "report.html"
            _print_archive(*archive_lines(rows))
        else:
            rep = r.issue_report(issue, settings, settings_dir, st, os.environ)
            page, target = issue_page(rep, settings_dir), out or settings_dir / "build" / rep.row.slug / "report.html"
            _print_sections(f"{rep.row.slug} — {rep.subject}", headline(rep))
            if rep.sendgrid is not None and rep.sendgrid.note:  # whole, where a narrow table would fold it
                typer.echo(f"SendGrid stats: {rep.sendgrid.note}")
        write_page(target, page)
    typer.echo(f"report page: {show(target)}")
    if open_:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def _print_sections(title: str, sections) -> None:
    """One rich table; every value a Text (never markup) and one line already."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_header=True, header_style="bold")
    for name, just in (("measure", "left"), ("count", "right"), ("rate", "right")):
        table.add_column(name, justify=just, overflow="fold")
    for name, lines in sections:
        table.add_row(Text(name, style="bold"), Text(""), Text(""))
        for line in lines:
            table.add_row(Text("  " + line.label), Text(line.count), Text(line.rate))
        table.add_section()
    _console().print(table)


SHORT = {"unsubscribes": "unsubs"}  # the terminal's label where the page has room for the word


def _print_archive(head, rows) -> None:
    """Never a word split: labels and slugs stay whole (no_wrap); piped, the table takes the
    width it needs; in a narrow terminal a cell is cut with an ellipsis rather than folded."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="every issue, newest first")
    for i, h in enumerate(head):
        table.add_column(SHORT.get(h, h), justify="left" if i < 2 else "right", no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    console = _console()
    if not console.is_terminal:
        console.width = max(console.width, console.measure(table, options=console.options.update_width(1000)).maximum)
    console.print(table)
