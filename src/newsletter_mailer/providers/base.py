"""The provider interface: what every way of delivering a message must offer, and may rely on.

A provider is a transport (as httpx's are): it gets a `SendContext` once, fixed for the
whole send, and batches of `Recipient`s; it knows nothing of issues, templates or lists.
It may rely on:

* `ctx.messages.build(email, name, values, r.message_id, r.token)` for a finished RFC 5322 message
  (MIME providers), raising message.HeaderValueError for a value that would break a header;
* `ctx.content`: the issue's subject, HTML and text split into literal parts and slots
  (for providers that substitute values themselves, as SendGrid does), its slug, the subject
  filled with default values, and which slot holds the unsubscribe link;
* `ctx.settings` for its own configuration section and the sender; `ctx.env` for secrets
  and environment settings (never os.environ directly);
* `Recipient.values`: the raw merge values, indexed by the slots of `ctx.content`.

It raises only NewsletterError: from __init__/open() when its configuration or credentials
are refused (nothing sent), from send() when the whole batch was refused (nothing delivered,
the send stops). Everything else about one recipient is an `Outcome` (ok, failed, permanent,
uncertain), one per recipient, in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Protocol

from newsletter_mailer.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter_mailer.message import MessageTemplate
    from newsletter_mailer.personalise import Template
    from newsletter_mailer.settings import Settings


@dataclass(slots=True)
class Recipient:
    """One subscriber on the way out: address, display name and raw merge values (slot order)."""

    email: str
    name: str
    values: list[str]
    # Chosen before the attempt, so the ledger's 'sending' row (and an 'uncertain' one) names the
    # message to look for in the server's log: MIME providers only (see Provider.own_message_id).
    message_id: str | None = None
    # The reader's sealed token, for the mailto unsubscribe's subject (List-Unsubscribe), or None.
    token: str | None = None
    # A subject test's sampled reader: their variant, "A" or "B" (SendGrid's events carry it back), or None.
    ab: str | None = None


@dataclass(slots=True)
class Outcome:
    """What became of one recipient's message."""

    email: str
    ok: bool
    message_id: str | None = None
    error: str | None = None
    permanent: bool = False  # a refusal for this address (5xx); retried only with --retry-failed
    uncertain: bool = False  # the attempt may or may not have been delivered: held back, never retried blindly
    where: str | None = None  # where a local provider put it (the outbox's file), for test-send to say


@dataclass(frozen=True)
class Content:
    """The issue as a transport sees it, built once per send: strings and parts-and-slots."""

    slug: str
    subject: Template          # the subject_prefix included
    html: Template
    text: Template
    default_subject: str       # the subject filled with the fields' defaults
    unsubscribe_slot: int | None


@dataclass
class SendContext:
    """Everything a provider may need, fixed for the whole send."""

    content: Content
    settings: Settings
    messages: MessageTemplate          # RFC 5322 bytes per recipient, for MIME providers
    outbox_dir: Path | None = None
    subject_prefix: str = ""
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    sign: Callable[[bytes], bytes] | None = None  # DKIM ([delivery.dkim]): final bytes -> signed bytes


class Provider(Protocol):
    name: str                           # as in --provider and the ledger
    label: str                          # as people write it, for messages
    batch_size: int                     # recipients per send() call (and per ledger transaction)
    uncertainty: str                    # "message" or "request": what a crash can leave uncertain
    own_message_id: bool                # True: the Message-ID is ours (ctx.messages), known before sending
    hold_limit: timedelta | None        # how far ahead it can hold mail (send --at); None: delivers at once

    def open(self) -> None:
        """Connect and authenticate; raise NewsletterError (nothing sent) when refused."""
        ...

    def send(self, batch: list[Recipient]) -> list[Outcome]:
        """Deliver a batch; one Outcome per recipient, in order. Raise NewsletterError to stop the send."""
        ...

    def close(self) -> None: ...


class Crowded(Exception):
    """A connection refused as one too many (SMTP 421, "too many connections") while others of the
    same send still work: it is closed, and the batch, not sent, goes out on another one."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


def env_value(env: Mapping[str, str], key: str) -> str | None:
    """An environment setting, stripped; None when unset or blank."""
    v = env.get(key)
    if v is None:
        return None
    return v.strip() or None


def backoff_base(env: Mapping[str, str]) -> float:
    """NEWSLETTER_BACKOFF_BASE: seconds before the first retry, doubling after (default 1)."""
    raw = env_value(env, "NEWSLETTER_BACKOFF_BASE")
    if raw is None:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise NewsletterError(f"NEWSLETTER_BACKOFF_BASE is '{raw}', not a number of seconds",
                              hint="use e.g. 1.0")
    return value


class WholeMessages:
    """What the MIME providers (outbox, SMTP) share: they hand over finished RFC 5322 messages
    one at a time, so a crash leaves at most one message uncertain, the Message-ID is ours and
    known before the attempt, and nothing can be held for later (`send --at` is refused with a
    cron/systemd line instead)."""

    uncertainty = "message"
    own_message_id = True
    hold_limit: timedelta | None = None
    ctx: SendContext

    def message(self, r: Recipient, head: bytes = b"") -> tuple[str, bytes]:
        """(Message-ID, bytes) for one reader: built, then DKIM-signed once when [delivery.dkim] is
        set; its headers are final here. `head` (the outbox's Return-Path, the receiver's header)
        goes in front, unsigned; without signing it is joined in build()'s one join.
        Raises message.HeaderValueError as build() does."""
        sign = self.ctx.sign
        if sign is None:
            return self.ctx.messages.build(r.email, r.name, r.values, r.message_id, r.token, head)
        msgid, data = self.ctx.messages.build(r.email, r.name, r.values, r.message_id, r.token)
        return msgid, head + sign(data)
