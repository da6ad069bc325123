"""The double opt-in email: built with the email package, handed to a delivery callable.

The web app does not know how mail leaves the machine: it gets a
`deliver(to_email, message_bytes)`. `outbox_delivery` is the one that needs no server
(files under `outbox/_confirm/`); confirm_delivery.py sends it over SMTP or SendGrid.
It carries nothing the visitor typed but the address it goes to (no name, no free text):
the form is public, and anything it let through would go out from our own domain to any
address (a phishing relay). Header values go through message.header_value / message.address.
"""

from __future__ import annotations

import secrets
import time
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Callable

from newsletter_mailer import files
from newsletter_mailer.message import address, header_value
from newsletter_mailer.settings import Settings

Deliver = Callable[[str, bytes], None]
_POLICY = compat32.clone(linesep="\r\n")


def subject(settings: Settings) -> str:
    return f"Please confirm your subscription to {settings.name}"


def build(settings: Settings, env, to_email: str, link: str) -> bytes:
    """The message bytes; env is the jinja environment of the templates' search path. The
    templates get the settings and the link only: nothing from the sign-up form."""
    ctx = {"settings": settings, "brand": settings.brand, "link": link,
           "hours": settings.web.confirm_hours, "subject": subject(settings)}
    msg = MIMEMultipart("alternative")
    msg["From"] = address(settings.from_name or settings.name, settings.from_email)
    msg["To"] = address("", to_email)
    if settings.reply_to:
        msg["Reply-To"] = address("", settings.reply_to)
    msg["Subject"] = header_value(subject(settings), "Subject")
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.from_email.rsplit("@", 1)[1])
    msg["Auto-Submitted"] = "auto-generated"
    msg.attach(MIMEText(env.get_template("web/confirm_email.txt.j2").render(ctx), "plain", "utf-8"))
    msg.attach(MIMEText(env.get_template("web/confirm_email.html.j2").render(ctx), "html", "utf-8"))
    return msg.as_bytes(policy=_POLICY)


def outbox_delivery(outbox_dir: Path) -> Deliver:
    """Each message a new file `<outbox>/_confirm/<time>-<random>.eml`, 0600, written exclusively
    and never through a link (the name holds no address: the outbox may be shared)."""
    folder = outbox_dir / "_confirm"

    def deliver(to_email: str, data: bytes) -> None:
        files.make_private_dir(folder)
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(6)}.eml"
        files.create_new(folder / name, data, files.PRIVATE)

    return deliver
