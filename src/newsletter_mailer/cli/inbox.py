"""`newsletter inbox`: read the bounce mailbox (SMTP senders) into the audience store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting


def _echo_summary(s, dry_run: bool) -> None:
    if dry_run:
        for line in s.lines:
            typer.echo(line)
    verb = "would record" if dry_run else "recorded"
    parts = [f"read {s.read} message(s)",
             f"{verb}: {s.bounced} bounced (permanent), {s.soft} soft bounce(s) counted ({s.soft_reached} reached "
             f"the limit), {s.complaints} complaint(s), {s.unsubscribes} unsubscribe(s)"]
    if s.autoreplies:
        parts.append(f"ignored {s.autoreplies} " + ("auto-reply" if s.autoreplies == 1 else "auto-replies"))
    if s.unrecognised:
        parts.append(f"left alone {s.unrecognised} unrecognised")
    # Always said, even when 0: a report that names a reader but is not tied to our mail is the
    # one a forger would send.
    parts.append(f"{s.unmatched} unmatched (not tied to our mail: left for a human)")
    if s.already:
        parts.append(f"already recorded: {s.already} (read by an earlier run)")
    typer.echo("; ".join(parts))
    if dry_run:
        typer.echo("dry run: nothing recorded, nothing marked")


@app.command()
def inbox(
    imap: Annotated[bool, typer.Option("--imap", help="read the IMAP mailbox named by IMAP_HOST, IMAP_USERNAME, IMAP_PASSWORD and optionally IMAP_PORT")] = False,
    mbox: Annotated[Optional[Path], typer.Option("--mbox", metavar="FILE", help="an mbox file (only read, never changed)")] = None,
    maildir: Annotated[Optional[Path], typer.Option("--maildir", metavar="DIR", help="a Maildir folder (only read, never changed)")] = None,
    folder: Annotated[str, typer.Option("--folder", metavar="NAME", show_default=False, help="IMAP folder to read (default INBOX)")] = "INBOX",
    move_to: Annotated[Optional[str], typer.Option("--move-to", metavar="NAME", help="IMAP folder for recognised messages")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be recorded; record and mark nothing")] = False,
    state: StateOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Read bounces, complaints and mailto unsubscribes from the mailbox SMTP sends bounce to."""
    import os

    from newsletter_mailer.audience.inbox import classifier_for, run
    from newsletter_mailer.audience.mailbox import open_source
    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.cli.progress import progress

    with reporting():
        settings, _, st = settings_and_state(config, state)
        source = open_source(imap=imap, mbox=mbox, maildir=maildir, folder=folder, move_to=move_to,
                             dry_run=dry_run)
        audience = st.audience()
        try:
            classifier = classifier_for(settings, st, dict(os.environ))
            with progress("reading", source.count(), "messages", min_total=100) as advance:
                summary = run(source, classifier, audience, settings.bounces.soft_limit, dry_run=dry_run,
                              advance=advance)
        finally:
            audience.close()
            source.close()
    _echo_summary(summary, dry_run)
