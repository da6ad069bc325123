"""`newsletter secret rotate`: a new key for readers' links, the old one readable for a while."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting

secret_app = typer.Typer(help="The key that seals readers' unsubscribe and confirmation links.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")


@secret_app.command()
def rotate(
    keep_days: Annotated[int, typer.Option("--keep-days", metavar="N", min=0, max=3650, help="days links sealed with the old secret keep working")] = 30,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Write a new secret into the state folder; links already sent keep working for --keep-days."""
    import os

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.unsubscribe import rotate as rotate_secret

    with reporting():
        st = settings_and_state(config, state, settings_optional=True)[2]
        typer.echo(rotate_secret(st.folder, dict(os.environ), keep_days))
