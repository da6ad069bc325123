"""`newsletter state`: init (create or migrate the schema) and copy (SQLite state into PostgreSQL)."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting, show

state_app = typer.Typer(help="Where the ledger and the audience store live: init a database, copy a state into it.",
                        no_args_is_help=True)
app.add_typer(state_app, name="state")


@state_app.command()
def init(config: ConfigOpt = None, state: StateOpt = None) -> None:
    """Create or migrate the schema in the database ([state] database_url or NEWSLETTER_DATABASE_URL).

    Without a database the SQLite files in the state folder are created or upgraded (as any
    command does)."""
    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.state.db import where
    from newsletter_mailer.state.migrations import init_database, latest

    with reporting():
        st = settings_and_state(config, state, settings_optional=True)[2]
        url = st.url
        if url is None:
            st.ledger().close()
            st.audience().close()
            typer.echo(f"SQLite state in {show(st.folder)}: ledger v{latest('ledger')}, audience v{latest('audience')} "
                       "(SQLite files upgrade themselves; nothing else to run)")
            return
        for component, (before, after) in init_database(url).items():
            change = f"v{before} → v{after}" if before != after else f"v{after}, up to date"
            typer.echo(f"{component}: {change}")
    typer.echo(f"schema ready in the database at {where(url)}")


@state_app.command()
def copy(
    to: Annotated[str, typer.Option("--to", metavar="URL", help="postgresql://user@host/database (password from "
                                    "PGPASSWORD or ~/.pgpass)", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="replace the rows a non-empty database already has")] = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Copy the state folder's SQLite ledger and audience store into PostgreSQL, verifying each table's count."""
    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.state.db import check_url, where
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.state.copy import copy_state

    with reporting():
        try:
            url = check_url(to, from_file=True)  # a password on the command line is in the process list
        except ValueError as exc:
            raise NewsletterError(str(exc), field="--to") from None
        state_dir = state if state is not None else settings_and_state(config, None)[2].folder
        counts = copy_state(state_dir, url, force=force)
    for table, n in counts:
        typer.echo(f"{table}: {n} row(s), verified")
    typer.echo(f"copied {show(state_dir)} into the database at {where(url)}; point [state] database_url at it")
