"""`newsletter serve`: the readers' web app (unsubscribe, sign-up) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", metavar="ADDR", show_default=False, help="address to listen on (default 127.0.0.1; any other: put a TLS proxy in front)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535, show_default=False, help="port to listen on (default 8080)")] = 8080,
    config: ConfigOpt = None,
    state: StateOpt = None,
    sequences: Annotated[bool, typer.Option("--sequences", help="also send the sequences' due steps every minute (as `newsletter sequences run`)")] = False,
) -> None:
    """Run the readers' web app: one-click unsubscribe and double opt-in sign-up."""
    import os

    from newsletter_mailer.web.serve import run

    with reporting():
        run(host, port, config, state, os.environ, echo=typer.echo, sequences=sequences)
