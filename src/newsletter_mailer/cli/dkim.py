"""`newsletter dkim keygen`: a new DKIM key (0600, never over an existing file) and its DNS record."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, reporting, show

dkim_app = typer.Typer(help="DKIM signing for SMTP and the outbox ([delivery.dkim]).", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dkim_app.command()
def keygen(
    selector: Annotated[str, typer.Option("--selector", metavar="S", help="the key's name in DNS, e.g. nl2026 (S._domainkey.<domain>)")],
    algorithm: Annotated[str, typer.Option("--algorithm", metavar="rsa|ed25519", help="rsa (2048 bits, read everywhere) or ed25519 (small; not every receiver checks it)")] = "rsa",
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE", help="where to write the private key (default dkim-<selector>.pem)")] = None,
    domain: Annotated[Optional[str], typer.Option("--domain", metavar="DOMAIN", help="the signing domain (default [delivery.dkim] domain, else from_email's)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a new private key (mode 0600) and print the TXT record to publish and the settings to add."""
    from newsletter_mailer import files
    from newsletter_mailer.dkim_signing import keygen as new_key
    from newsletter_mailer.dkim_signing import txt_chunks
    from newsletter_mailer.errors import NewsletterError

    with reporting():
        if not _LABEL.match(selector):
            raise NewsletterError(f"'{selector}' is not a DNS label", field="--selector",
                                  hint="use letters, digits and hyphens, e.g. nl2026")
        if domain is not None and not all(_LABEL.match(p) for p in domain.rstrip(".").split(".")):
            raise NewsletterError(f"'{domain}' is not a domain name", field="--domain", hint="e.g. example.org")
        domain = domain.rstrip(".") if domain else _domain(config)
        pem, key = new_key(algorithm)
        path = out if out is not None else Path(f"dkim-{selector}.pem")
        try:
            files.create_new(path, pem, files.PRIVATE, fsync=True)
        except FileExistsError:
            raise NewsletterError("already exists: a key is never replaced", path=path,
                                  hint="choose another --out, or another --selector for a new key") from None
        except OSError as exc:
            raise NewsletterError(f"cannot write the key: {exc.strerror}", path=path) from None
    name = f"{selector}._domainkey.{domain}." if domain else f"{selector}._domainkey.<your domain>."
    typer.echo(f"wrote {show(path)} (mode 0600): keep it private (or put its contents in DKIM_PRIVATE_KEY)")
    typer.echo("publish this DNS record:")
    typer.echo(f"{name} IN TXT {txt_chunks(key.record())}")
    typer.echo("then add to newsletter.toml:")
    typer.echo(f'[delivery.dkim]\ndomain = "{domain or "<your domain>"}"\nselector = "{selector}"\nkey_file = "{path}"')


def _domain(config: Optional[Path]) -> str | None:
    """[delivery.dkim] domain, else from_email's; None without a settings file (the record says where)."""
    from newsletter_mailer.settings import load_settings

    if config is None and not Path("newsletter.toml").exists():
        return None
    settings, _ = load_settings(config)
    dkim = settings.delivery.dkim
    return dkim.domain if dkim else settings.from_email.rsplit("@", 1)[1]
