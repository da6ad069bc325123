"""The outbox: one .eml file per message, so everything works with no key and no server.

Files are written atomically (an exclusive temp file, then rename; 0600, never through a link) under <outbox>/<slug>/, named
for the recipient, and open in any mail client. Test mails go to <outbox>/<slug>/test/, each a new
time-stamped file created exclusively: a test never replaces a real message or an earlier test.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.files import PRIVATE, create_new, make_private_dir, open_folder, write_at
from newsletter_mailer.message import HeaderValueError
from newsletter_mailer.providers.base import Outcome, Recipient, SendContext, WholeMessages

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def filename(email: str, prefix: str = "") -> str:
    """Readable and unique per address (case-insensitively), safe on any filesystem."""
    digest = hashlib.sha1(email.lower().encode("utf-8")).hexdigest()[:8]
    return f"{prefix}{_UNSAFE.sub('_', email.lower())[:80]}-{digest}.eml"


def dated_filename(email: str) -> str:
    """A test mail's name: when it was written, then the address; a random tail keeps two tests
    in the same second apart."""
    return filename(email, f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}-")


class OutboxProvider(WholeMessages):
    """The model provider: what every other one does, minus the network. Each message is
    its own .eml file, written atomically: nobody ever opens half a message."""

    name = "outbox"
    batch_size = 100
    label = "outbox"

    def __init__(self, ctx: SendContext):
        base = ctx.outbox_dir if ctx.outbox_dir is not None else Path("outbox")
        self.test = bool(ctx.subject_prefix)
        self.folder = base / ctx.content.slug / "test" if self.test else base / ctx.content.slug
        self.ctx = ctx
        self._dfd: int | None = None

    def open(self) -> None:
        try:
            make_private_dir(self.folder)  # 0700: the messages name readers and carry their links
            if self._dfd is None:
                self._dfd = open_folder(self.folder)  # held for the send: no look-up per message
        except OSError as exc:
            raise NewsletterError(f"cannot create the outbox: {exc.strerror}", path=self.folder,
                                  hint="choose another folder with --outbox") from None

    def send(self, batch: list[Recipient]) -> list[Outcome]:
        out = []
        message, envelope = self.message, self.ctx.messages.envelope_sender
        folder = str(self.folder)
        for r in batch:
            sender = envelope(r.token)  # the Return-Path a receiving server would write from MAIL FROM
            head = b"Return-Path: <" + sender.encode("ascii") + b">\r\n" if sender is not None else b""
            try:
                msgid, data = message(r, head)
            except HeaderValueError as exc:
                out.append(Outcome(r.email, False, error=str(exc), permanent=True))
                continue
            name = dated_filename(r.email) if self.test else filename(r.email)
            path = os.path.join(folder, name)
            try:
                if self.test:
                    create_new(Path(path), data, PRIVATE)  # a new name each time, never replaced
                else:
                    write_at(self._dfd, name, data, PRIVATE)  # exclusive temp file, never through a link
            except OSError as exc:
                # Not delivered: a temporary failure; the send loop's error budget stops a full disk.
                out.append(Outcome(r.email, False, error=f"cannot write {path}: {exc.strerror or exc}"))
                continue
            out.append(Outcome(r.email, True, message_id=msgid, where=path))
        return out

    def close(self) -> None:
        dfd, self._dfd = self._dfd, None
        if dfd is not None:
            os.close(dfd)
