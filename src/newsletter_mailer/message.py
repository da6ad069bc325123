"""RFC 5322 messages, built once per issue with the email package and filled per recipient.

The email package lays out the skeleton (headers, multipart/alternative, text/plain
then text/html, UTF-8, quoted-printable) once, with opaque markers where per-recipient
values go. Each body's literal parts are QP-encoded once; per recipient only the
merge values are QP-encoded and slotted in between soft line breaks, so a placeholder
is never split across lines and no line grows past 76 characters. Building a message
from scratch costs milliseconds; filling this costs microseconds.
"""

from __future__ import annotations

import binascii
import html
import os
import re
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from urllib.parse import quote

from newsletter_mailer.compose import UNSUBSCRIBE, Composed
from newsletter_mailer.personalise import Template

_SOFT = "=\r\n"
_M = "xqzNLMARK"  # header/body markers: alphanumeric, so the email package leaves them alone
_TO, _SUBJECT, _MSGID, _LISTUNSUB, _TEXT, _HTML = (f"{_M}{n}Q" for n in range(6))
_MARK_RE = re.compile(f"{_M}(\\d)Q")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


class HeaderValueError(ValueError):
    """A header value that would break the message (line break, or too long)."""


def qp(text: str) -> str:
    """Quoted-printable with CRLF line ends, trailing whitespace encoded."""
    raw = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(raw, istext=True).decode("ascii").replace("\n", "\r\n")


def _qp_value(text: str) -> str:
    if text.isascii() and text.isalnum():
        return text
    return qp(text)


def _qp_template(t: Template) -> Template:
    """QP-encode the literal parts once; each gap gets soft breaks around it."""
    parts = [qp(p) for p in t.parts]
    if t.slots:
        parts = [p + _SOFT if i < len(parts) - 1 else p for i, p in enumerate(parts)]
        parts = [p if i == 0 else _SOFT + p for i, p in enumerate(parts)]
    return Template(tuple(parts), t.slots)


def header_value(value: str, name: str) -> str:
    """An encoded header value: plain when short ASCII, else RFC 2047 folded. Refuses CR/LF."""
    if "\r" in value or "\n" in value:
        raise HeaderValueError(f"line break in {name}")
    if value.isascii() and len(value) < 900:
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def address(name: str, email: str) -> str:
    """To/From value: the name quoted or RFC 2047-encoded as needed, the address as is."""
    if "\r" in name or "\n" in name or "\r" in email or "\n" in email:
        raise HeaderValueError("line break in an address")
    if not name:
        return email
    if name.isascii() and len(name) < 200:
        if _SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{email}>"
    return f"{Header(name, 'utf-8', header_name='To').encode(linesep=chr(13) + chr(10))} <{email}>"


class MessageTemplate:
    """Per-recipient RFC 5322 bytes from one composed issue."""

    def __init__(self, c: Composed, *, subject_prefix: str = ""):
        s = c.settings
        self.composed = c
        self.subject = c.subject.map_parts(lambda p: p) if not subject_prefix else \
            Template((subject_prefix + c.subject.parts[0],) + c.subject.parts[1:], c.subject.slots)
        self.domain = s.from_email.rsplit("@", 1)[1]
        self.mailto = f"mailto:{s.unsubscribe_mailto}?subject=unsubscribe" if s.unsubscribe_mailto else None
        self.unsub_index = next((i for i, f in enumerate(c.fields) if f.name == UNSUBSCRIBE), None)

        msg = EmailMessage(policy=SMTP)
        msg["From"] = Address(display_name=s.from_name or s.name, addr_spec=s.from_email)
        msg["To"] = _TO
        if s.reply_to:
            msg["Reply-To"] = s.reply_to
        msg["Subject"] = _SUBJECT
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = _MSGID
        msg["List-Id"] = s.list_id_header
        msg["X-Newsletter-Issue"] = c.slug
        msg["X-List-Unsub"] = _LISTUNSUB
        msg.set_content(_TEXT + "\n", subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(_HTML + "\n", subtype="html", charset="utf-8", cte="quoted-printable")
        skeleton = msg.as_string().replace(f"X-List-Unsub: {_LISTUNSUB}\r\n", _LISTUNSUB)
        pieces = _MARK_RE.split(skeleton)
        self._literals = pieces[0::2]
        self._marks = [int(m) for m in pieces[1::2]]
        self._text = _qp_template(c.text)
        self._html = _qp_template(c.html)

    def list_unsubscribe(self, url: str | None) -> str:
        """List-Unsubscribe header line(s) with CRLF (RFC 8058 one-click when https), or nothing."""
        links = [f"<{u}>" for u in (url, self.mailto) if u]
        if not links:
            return ""
        out = "List-Unsubscribe: " + ", ".join(links)
        if url and url.lower().startswith("https://"):
            out += "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
        return out + "\r\n"

    def build(self, email: str, name: str, values: list[str]) -> tuple[str, bytes]:
        """(Message-ID, message bytes) for one recipient. Raises HeaderValueError for unsafe values."""
        subject = self.subject.fill(values)
        msgid = f"<{os.urandom(12).hex()}@{self.domain}>"
        unsub = values[self.unsub_index] if self.unsub_index is not None else None
        text_vals = [_qp_value(v) for v in values]
        html_vals = [_qp_value(html.escape(v)) for v in values]
        fills = (
            address(name, email),
            header_value(subject, "Subject"),
            msgid,
            self.list_unsubscribe(unsub),
            self._text.fill(text_vals),
            self._html.fill(html_vals),
        )
        lits = self._literals
        out = [lits[0]]
        for i, m in enumerate(self._marks, 1):
            out.append(fills[m])
            out.append(lits[i])
        return msgid, "".join(out).encode("ascii")


def unsubscribe_link(template: str, email: str, token: str) -> str:
    """The settings' unsubscribe_url filled for one address (values URL-encoded)."""
    return (template.replace("{{ email }}", quote(email, safe="@"))
            .replace("{{email}}", quote(email, safe="@"))
            .replace("{{ token }}", token).replace("{{token}}", token))
