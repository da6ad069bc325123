"""`newsletter audience sync`: SendGrid's suppressions into the audience store.

Kept out of cli/audience.py (the `audience` group) so each file has one job: that module
calls `register(audience_app)` to add this command to its group.
"""

from __future__ import annotations

import os

import typer

from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting


def sync(config: ConfigOpt = None, state: StateOpt = None) -> None:
    """Pull SendGrid's bounces, spam reports, invalid emails, blocks and unsubscribes into the store."""
    from newsletter_mailer.cli.progress import progress
    from newsletter_mailer.audience.sendgrid_sync import sync as pull
    from newsletter_mailer.cli.common import settings_and_state

    with reporting():
        settings, _, st = settings_and_state(config, state)
        store = st.audience()
        try:
            with progress("syncing", None, "entries") as advance:
                report = pull(settings, store, os.environ, advance=advance)
        finally:
            store.close()
    for r in report.lists:
        what = "new" if r.name == "blocks" else "changed"
        typer.echo(f"{r.name}: {r.fetched} read, {r.changed} {what}")
    typer.echo(f"synced from SendGrid: {report.changed} change(s) recorded (blocks are recorded, not suppressed)")


def register(audience_app: typer.Typer) -> None:
    audience_app.command("sync")(sync)
