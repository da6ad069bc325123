"""Delivery providers behind one small interface (as httpx's transports are): see base.py.

`outbox` writes .eml files (the model provider), `smtp` talks to any SMTP server,
`sendgrid` uses the v3 API. The send loop only sees `Provider`: open, send a batch, close.
A provider's module is imported only when it is asked for.
"""

from __future__ import annotations

import importlib

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.providers.base import Content, Outcome, Provider, Recipient, SendContext

# name -> "module:class", imported on first use
_REGISTRY = {
    "outbox": "newsletter_mailer.providers.outbox:OutboxProvider",
    "smtp": "newsletter_mailer.providers.smtp:SmtpProvider",
    "sendgrid": "newsletter_mailer.providers.sendgrid:SendGridProvider",
}


def provider_class(name: str) -> type:
    """The class registered under name (its module imported now)."""
    where = _REGISTRY.get(name)
    if where is None:
        raise NewsletterError(f"unknown provider '{name}'", field="provider", hint="use outbox, smtp or sendgrid")
    module, _, cls = where.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_provider(name: str, ctx: SendContext) -> Provider:
    return provider_class(name)(ctx)


__all__ = ["Content", "Outcome", "Provider", "Recipient", "SendContext", "get_provider", "provider_class"]
