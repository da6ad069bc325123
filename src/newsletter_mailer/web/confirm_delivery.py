"""The confirmation email through the configured provider (`delivery.provider`).

The send's own providers carry it, one recipient at a time, so connection, TLS, login,
retries and error wording are theirs (not copied): SMTP gets the finished bytes through
a stand-in for MessageTemplate; SendGrid gets a content with no merge slots (one
personalization, the text and HTML parts). The outbox (`outbox/_confirm/`) stays the
default. Settings and credentials are checked when the app starts, not at the first
sign-up; a refusal later raises NewsletterError for the web app to log.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Mapping

from newsletter_mailer.web.confirm_mail import Deliver, outbox_delivery
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.personalise import Template
from newsletter_mailer.providers import Content, Recipient, SendContext, provider_class
from newsletter_mailer.settings import Settings

SLUG = "_confirm"  # the "issue" a confirmation counts as (SendGrid's category, X-Newsletter-Issue)


class _Prebuilt:
    """What a MIME provider asks of MessageTemplate, answered with one finished message."""

    def __init__(self, data: bytes):
        self.data = data
        self.msgid = email.message_from_bytes(data)["Message-ID"] or ""

    def build(self, email_: str, name: str, values: list[str], msgid: str | None = None,
              token: str | None = None, head: bytes = b"") -> tuple[str, bytes]:
        return self.msgid, head + self.data  # the finished message keeps its own Message-ID

    def envelope_sender(self, token: str | None) -> str | None:
        return None  # a confirmation's bounces go to from_email: it names no reader of the list yet

    def list_unsubscribe(self, url: str | None, token: str | None = None) -> str:
        return ""  # a confirmation is not a list message


def _literal(text: str) -> Template:
    return Template((text,), ())


def _context(settings: Settings, env: Mapping[str, str], data: bytes) -> SendContext:
    """The message's subject, text and HTML as a slot-free Content (SendGrid builds its own MIME)."""
    subject = text = html = ""
    if data:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        subject = str(msg["Subject"])
        text, html = (msg.get_body((kind,)).get_content() for kind in ("plain", "html"))
    content = Content(SLUG, _literal(subject), _literal(html), _literal(text), subject, None)
    return SendContext(content, settings, _Prebuilt(data), env=env)


def _through(name: str, settings: Settings, env: Mapping[str, str]) -> Deliver:
    """A deliver callable over provider `name`; its settings and credentials checked now."""
    cls = provider_class(name)
    probe = cls(_context(settings, env, b""))
    if name == "sendgrid":
        probe.open()  # checks the key and host without a request

    def deliver(to_email: str, data: bytes) -> None:
        provider = cls(_context(settings, env, data))
        provider.open()
        try:
            [outcome] = provider.send([Recipient(to_email, "", [])])
        finally:
            provider.close()
        if not outcome.ok:
            raise NewsletterError(f"{provider.label} did not take the confirmation email: {outcome.error}")

    return deliver


def configured(settings: Settings, env: Mapping[str, str], outbox_dir: Path) -> Deliver:
    """The deliver callable for delivery.provider: outbox files, SMTP or SendGrid."""
    name = settings.delivery.provider
    if name == "outbox":
        return outbox_delivery(outbox_dir)
    return _through(name, settings, env)

