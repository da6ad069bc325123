"""`newsletter doctor`: one line per check of the sending domain; exit 1 on any failure."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, ProviderOpt, StateOpt, reporting

LABELS = {"ok": "ok", "warning": "warning", "error": "failure"}


@app.command()
def doctor(
    nameserver: Annotated[Optional[str], typer.Option("--nameserver", metavar="IP[:PORT]", help="ask this DNS server (default: the system's resolver)")] = None,
    online: Annotated[bool, typer.Option("--online", help="also POST a test one-click unsubscribe to [web] base_url (it changes no reader)")] = False,
    provider: ProviderOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Will it land? SPF, DKIM, DMARC, bounces and unsubscribe against Gmail's and Yahoo's rules."""
    import os

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.doctor import diagnose
    from newsletter_mailer.doctor.lookup import Lookup, resolver
    from newsletter_mailer.errors import redact
    from newsletter_mailer.providers import provider_class

    with reporting():
        settings, _, st = settings_and_state(config, state)
        name = provider or settings.delivery.provider
        provider_class(name)  # an unknown name is one line, exit 2
        checks = diagnose(settings, Lookup(resolver(nameserver)), os.environ, st, name, online=online)
    for c in checks:
        typer.echo(redact(f"{LABELS[c.level]:<8} {c.name}: {c.message}"))
    failures = sum(c.level == "error" for c in checks)
    warnings = sum(c.level == "warning" for c in checks)
    typer.echo(f"{failures} failure(s), {warnings} warning(s)" + (": fix the failures from the top" if failures else ""))
    if failures:
        raise typer.Exit(1)
