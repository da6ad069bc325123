"""Delivery providers behind one small interface (as httpx's transports are).

`outbox` writes .eml files, `smtp` talks to any SMTP server, `sendgrid` uses the v3
API. The send loop only sees `Provider`: open, send a batch, close.
"""

from __future__ import annotations

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.providers.base import Provider, Recipient, Result, SendContext

NAMES = ("outbox", "smtp", "sendgrid")


def get_provider(name: str, ctx: SendContext) -> Provider:
    if name == "outbox":
        from newsletter_mailer.providers.outbox import OutboxProvider

        return OutboxProvider(ctx)
    if name == "smtp":
        from newsletter_mailer.providers.smtp import SmtpProvider

        return SmtpProvider(ctx)
    if name == "sendgrid":
        from newsletter_mailer.providers.sendgrid import SendGridProvider

        return SendGridProvider(ctx)
    raise NewsletterError(f"unknown provider '{name}'", field="provider", hint="use outbox, smtp or sendgrid")


__all__ = ["NAMES", "Provider", "Recipient", "Result", "SendContext", "get_provider"]
