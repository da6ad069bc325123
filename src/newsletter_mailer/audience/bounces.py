"""Classify one message from the bounce mailbox: bounce, complaint, unsubscribe, auto-reply or neither.

Detection is flufl.bounce's (Mailman's detectors for RFC 3464 DSNs and the common
non-standard bounces) plus RFC 5965 feedback reports and mailto unsubscribes. The order
matters and is why vacation replies are never bounces (listmonk issue 1334): a message
is read as a bounce only when it is a delivery report or comes from a mailer daemon, or
when it carries no auto-reply mark at all. Each finding is matched to a recipient and an
issue through, in order, the original Message-ID in the ledger, the report's recipient
fields, the returned X-Newsletter-Issue header and the reader's token (subject or VERP).

Anyone can mail the bounce address a report naming any address, so a finding is `tied` to
our mail only by what a stranger cannot make: the returned Message-ID of a message in the
ledger (its recipient is the one named), or a valid token (VERP, the returned
List-Unsubscribe, a mailto unsubscribe). Only tied findings change a status (inbox.py).
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import TYPE_CHECKING, Callable

from newsletter_mailer.ledger import key

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.state.handle import State

BOUNCE, COMPLAINT, UNSUBSCRIBE, AUTOREPLY, UNRECOGNISED, UNMATCHED = (
    "bounce", "complaint", "unsubscribe", "autoreply", "unrecognised", "unmatched")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon")
_OOO = re.compile(r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?re(ply|sponse)|"
                  r"abwesenheit|absence|vacation|away from)", re.I)
_UNSUB = re.compile(r"^\s*unsubscribe(?:\s+(\S+))?\s*$", re.I)
_VERP = re.compile(r"^bounces\+([A-Za-z0-9_-]{22,})@", re.I)
_STATUS = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
# A reader's token in a returned List-Unsubscribe: the app's /u/<token> or the mailto's subject.
_LIST_UNSUB_TOKEN = re.compile(r"(?:/u/|[?&]subject=unsubscribe(?:%20|\+))([A-Za-z0-9_-]{22,})", re.I)


@dataclass(frozen=True)
class Verdict:
    """What one message says about one recipient (email None when nobody could be named)."""

    kind: str
    email: str | None = None
    issue: str | None = None
    permanent: bool = False
    reason: str | None = None
    tied: bool = False  # tied to our mail (ledger Message-ID or valid token): may change a status


TokenReader = Callable[[str], "tuple[str, str | None] | None"]


class MessageIndex:
    """Message-ID -> (issue, email) from the send ledger, read through the state handle and loaded
    once on first use (never created just to be read): the ledger has no index on message_id."""

    def __init__(self, state: State | None):
        self.state = state
        self._ids: dict[str, tuple[str, str]] | None = None

    def find(self, message_id: str | None) -> tuple[str, str] | None:
        if not message_id:
            return None
        if self._ids is None:
            self._ids = self._load()
        return self._ids.get(_bare_id(message_id))

    def _load(self) -> dict[str, tuple[str, str]]:
        ledger = self.state.ledger(create=False) if self.state is not None else None
        if ledger is None:
            return {}
        try:
            return {_bare_id(m): (i, e) for m, i, e in ledger.message_ids()}
        finally:
            ledger.close()


def _bare_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip().lower()


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw)


def _report_type(msg: Message) -> str:
    return (msg.get_param("report-type") or "").lower() if msg.get_content_type() == "multipart/report" else ""


def _from_daemon(msg: Message) -> bool:
    name, addr = parseaddr(str(msg.get("From", "")))
    local = addr.rsplit("@", 1)[0].lower()
    return local in _DAEMONS or local == "" or "mail delivery" in name.lower()


def is_autoreply(msg: Message) -> bool:
    """RFC 3834 and the vendors' own marks; a mailer daemon's report is never one."""
    submitted = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    return (not submitted.startswith("no") or "X-Autoreply" in msg or "X-Autorespond" in msg
            or precedence == "auto_reply" or bool(_OOO.match(str(msg.get("Subject", "")))))


def _parts(msg: Message, types: tuple[str, ...]) -> list[Message]:
    return [p for p in msg.walk() if p.get_content_type() in types]


def _returned_headers(msg: Message) -> Message | None:
    """The original message's headers, as returned inside a report or a non-standard bounce."""
    for part in _parts(msg, ("message/rfc822", "text/rfc822-headers")):
        if part.get_content_type() == "text/rfc822-headers":
            return email.message_from_string(part.get_payload(decode=True).decode("latin-1"))
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0]
    return None


def _dsn_fields(msg: Message) -> dict[str, tuple[str | None, str | None]]:
    """email key -> (status code, diagnostic) from a DSN's per-recipient blocks."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for part in _parts(msg, ("message/delivery-status",)):
        blocks = part.get_payload()
        for block in blocks[1:] if isinstance(blocks, list) else []:
            rcpt = block.get("Original-Recipient") or block.get("Final-Recipient") or ""
            addr = str(rcpt).partition(";")[2].strip().strip("<>")
            if addr:
                status = _STATUS.search(str(block.get("Status", "")))
                diag = block.get("Diagnostic-Code")
                out[key(addr)] = (status.group() if status else None,
                                  " ".join(str(diag).partition(";")[2].split()) or None if diag else None)
    return out


class Classifier:
    """Reads one message at a time; holds what matching needs (ledger index, token reader)."""

    def __init__(self, index: MessageIndex, read_token: TokenReader, mailto: str | None = None):
        self.index = index
        self.read_token = read_token
        self.mailto = key(mailto) if mailto else None

    def classify(self, raw: bytes) -> list[Verdict]:
        """One or more verdicts (a report may name several recipients); never raises on bad mail."""
        msg = parse(raw)
        kind = _report_type(msg)
        if kind == "feedback-report":
            return [self._complaint(msg)]
        if kind == "delivery-status" or _from_daemon(msg):
            found = self._bounces(msg)
            if found:
                return found
        if is_autoreply(msg):
            return [Verdict(AUTOREPLY, reason=" ".join(str(msg.get("Subject", "")).split())[:200] or None)]
        unsub = _UNSUB.match(str(msg.get("Subject", "")))
        if unsub and self._to_mailto(msg):
            return [self._unsubscribe(unsub.group(1))]
        return self._bounces(msg) or [Verdict(UNRECOGNISED)]

    def _to_mailto(self, msg: Message) -> bool:
        if self.mailto is None:
            return True
        rcpts = getaddresses([str(v) for h in ("To", "Cc", "Delivered-To", "X-Original-To")
                              for v in msg.get_all(h, [])])
        return any(key(a) == self.mailto for _, a in rcpts)

    def _unsubscribe(self, token: str | None) -> Verdict:
        found = self.read_token(token) if token else None
        if not found:
            return Verdict(UNRECOGNISED, reason="unsubscribe request without a valid token: left for a human")
        return Verdict(UNSUBSCRIBE, key(found[0]), found[1], True, "mailto unsubscribe", tied=True)

    def _match(self, msg: Message, email_: str | None) -> tuple[str | None, str | None, bool]:
        """(email, issue, tied): the ledger's row for the returned Message-ID wins, then the reader a
        valid token names; else what the report says, which a stranger can write (not tied)."""
        original = _returned_headers(msg)
        row = self.index.find(original.get("Message-ID") if original is not None else None)
        if row:
            return row[1], row[0], True
        issue = str(original.get("X-Newsletter-Issue", "")).strip() or None if original is not None else None
        found = self._verp(msg) or self._list_unsubscribe(original)
        if found:
            return found[0], issue or found[1], True
        return email_, issue, False

    def _list_unsubscribe(self, original: Message | None) -> tuple[str, str | None] | None:
        """The reader the returned List-Unsubscribe's token names (a feedback report returns it)."""
        m = _LIST_UNSUB_TOKEN.search(str(original.get("List-Unsubscribe", ""))) if original is not None else None
        found = self.read_token(m.group(1)) if m else None
        return (key(found[0]), found[1]) if found else None

    def _verp(self, msg: Message) -> tuple[str, str | None] | None:
        """bounces+<token>@…: the envelope recipient of the bounce names the reader (VERP)."""
        for h in ("Delivered-To", "X-Original-To", "To"):
            for _, addr in getaddresses([str(v) for v in msg.get_all(h, [])]):
                m = _VERP.match(addr)
                found = self.read_token(m.group(1)) if m else None
                if found:
                    return key(found[0]), found[1]
        return None

    def _bounces(self, msg: Message) -> list[Verdict]:
        from flufl.bounce import all_failures

        temporary, permanent = all_failures(msg)
        if not temporary and not permanent:
            verp = self._verp(msg)
            return [Verdict(BOUNCE, verp[0], verp[1], True, "VERP bounce", tied=True)] if verp else []
        fields = _dsn_fields(msg)
        out = []
        for raw_addr, perm in [(a, True) for a in sorted(permanent)] + [(a, False) for a in sorted(temporary)]:
            addr = key(raw_addr.decode("utf-8", "replace"))
            status, diag = fields.get(addr, (None, None))
            if status:
                perm = status.startswith("5")
            email_, issue, tied = self._match(msg, addr)
            reason = " ".join(x for x in (status, diag) if x) or ("permanent" if perm else "temporary") + " failure"
            out.append(Verdict(BOUNCE, email_, issue, perm, reason[:300], tied))
        return out

    def _complaint(self, msg: Message) -> Verdict:
        """RFC 5965: Original-Rcpt-To in the feedback report, else the returned message's To."""
        email_ = None
        for part in _parts(msg, ("message/feedback-report",)):
            blocks = part.get_payload()
            block = blocks[0] if isinstance(blocks, list) and blocks else None
            rcpt = block.get("Original-Rcpt-To") if block is not None else None
            if rcpt:
                email_ = key(parseaddr(str(rcpt))[1]) or None
        original = _returned_headers(msg)
        if email_ is None and original is not None:
            email_ = key(parseaddr(str(original.get("To", "")))[1]) or None
        email_, issue, tied = self._match(msg, email_)
        return Verdict(COMPLAINT, email_, issue, True, "spam complaint (feedback report)", tied)
