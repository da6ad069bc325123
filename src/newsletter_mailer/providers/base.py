"""The provider interface: what every way of delivering a message must offer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from newsletter_mailer.compose import Composed
    from newsletter_mailer.message import MessageTemplate


@dataclass(slots=True)
class Recipient:
    """One subscriber on the way out: address, display name and raw merge values (field order)."""

    email: str
    name: str
    values: list[str]


@dataclass(slots=True)
class Result:
    email: str
    ok: bool
    message_id: str | None = None
    error: str | None = None
    permanent: bool = False  # a refusal for this address (5xx); retried only with --retry-failed
    uncertain: bool = False  # the attempt may or may not have been delivered: held back, never retried blindly


@dataclass
class SendContext:
    """Everything a provider may need, fixed for the whole send."""

    composed: Composed
    messages: MessageTemplate          # RFC 5322 bytes per recipient, for MIME providers
    settings_dir: Path
    outbox_dir: Path | None = None
    subject_prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    name: str
    batch_size: int                     # recipients per send() call (and per ledger transaction)
    uncertainty: str                    # "message" or "request": what a crash can leave uncertain

    def unsubscribe_url(self) -> str | None:
        """A provider-made unsubscribe URL (SendGrid groups) or None to use the settings' one."""
        ...

    def open(self) -> None:
        """Connect and authenticate; raise NewsletterError (nothing sent) when refused."""
        ...

    def send(self, batch: list[Recipient]) -> list[Result]:
        """Deliver a batch; one Result per recipient, in order. Raise NewsletterError to stop the send."""
        ...

    def close(self) -> None: ...
