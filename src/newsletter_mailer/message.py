"""RFC 5322 messages, built once per issue with the email package and filled per recipient.

The email package lays out the skeleton (headers, multipart/alternative, text/plain
then text/html, UTF-8, quoted-printable) once, with opaque markers where per-recipient
values go. Each body's literal parts are QP-encoded once; per recipient only the
merge values are QP-encoded and slotted in between soft line breaks, so a placeholder
is never split across lines and no line grows past 76 characters. Building a message
from scratch per recipient would cost orders of magnitude more (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import binascii
import html
import operator
import os
import re
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate


from newsletter_mailer.compose import UNSUBSCRIBE, Composed
from newsletter_mailer.mergefields import fill_url_placeholders
from newsletter_mailer.personalise import READER_FIELD, Template
from newsletter_mailer.validators import header_problem

_SOFT = "=\r\n"
_M = "xqzNLMARK"  # header/body markers: alphanumeric, so the email package leaves them alone
_TO, _SUBJECT, _MSGID, _LISTUNSUB, _TEXT, _HTML = (f"{_M}{n}Q" for n in range(6))
_MARK_RE = re.compile(f"{_M}(\\d)Q")
_TO_N, _SUBJECT_N, _MSGID_N, _LISTUNSUB_N, _TEXT_N, _HTML_N = range(6)
_QP_CACHE_MAX = 4096  # encoded values kept per message template (defaults, common names, web_url)
_URLSAFE = re.compile(r"[A-Za-z0-9_.-]{0,75}")  # a tracked-link reader half as tokens.py makes it
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


class HeaderValueError(ValueError):
    """A header value that would break the message (line break, or too long)."""


def qp(text: str) -> str:
    """Quoted-printable with CRLF line ends, trailing whitespace encoded."""
    raw = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(raw, istext=True).decode("ascii").replace("\n", "\r\n")


def _qp_value(text: str) -> str:
    """A merge value as quoted-printable. Each gap starts on a line of its own (_qp_template), so a
    short line of printable ASCII without "=" or trailing space is its own encoding: most values
    (tokens, addresses, links) skip the encoder."""
    if len(text) <= 75 and text.isascii() and text.isprintable() and "=" not in text and text[-1:] != " " \
            and text != ".":
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
    """An encoded header value: plain when short ASCII, else RFC 2047 folded. Refuses what
    validators.header_problem refuses (every control character, encoded ones too)."""
    problem = header_problem(value)
    if problem:
        raise HeaderValueError(f"{name} {problem}")
    # "=?" would let a value smuggle its own RFC 2047 encoded-word past us for mail clients to
    # decode: such values are encoded, so they decode to themselves.
    if value.isascii() and len(value) < 900 and "=?" not in value:
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def address(name: str, email: str) -> str:
    """To/From value: the name quoted or RFC 2047-encoded as needed, the address as is."""
    for what, v in (("name", name), ("address", email)):
        problem = header_problem(v)
        if problem:
            raise HeaderValueError(f"the recipient's {what} {problem}")
    if not email.isascii():
        raise HeaderValueError("the recipient's address is not ASCII")
    if not name:
        return email
    if name.isascii() and len(name) < 200 and "=?" not in name:  # see header_value
        if _SPECIALS.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{email}>"
    return f"{Header(name, 'utf-8', header_name='To').encode(linesep=chr(13) + chr(10))} <{email}>"


class MessageTemplate:
    """Per-recipient RFC 5322 bytes from one composed issue."""

    def __init__(self, c: Composed, *, subject_prefix: str = ""):
        s = c.settings
        self.subject = c.subject if not subject_prefix else \
            Template((subject_prefix + c.subject.parts[0],) + c.subject.parts[1:], c.subject.slots)
        self.domain = s.from_email.rsplit("@", 1)[1]
        # The subject carries the reader's sealed token (added per recipient) for `newsletter inbox`.
        self.mailto = f"mailto:{s.unsubscribe_mailto}?subject=unsubscribe" if s.unsubscribe_mailto else None
        self.unsub_index = next((i for i, f in enumerate(c.fields) if f.name == UNSUBSCRIBE), None)
        self.one_click = s.one_click
        # The envelope sender: [delivery] return_path, per reader with VERP (bounces+<token>@domain).
        self.return_path = rp = s.delivery.return_path
        local, _, domain = (rp or "").rpartition("@")
        self._verp = (local + "+", "@" + domain) if s.delivery.verp and rp else None

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
        self._token_slot = next((i for i, f in enumerate(c.fields) if f.name == READER_FIELD), -1)
        self._text = _qp_template(c.text)
        self._html = _qp_template(c.html)
        self._compile_plan()

    def _compile_plan(self) -> None:
        """The whole message as bytes literals and gaps, laid out once.

        Per recipient only the gaps are filled (header values; QP-encoded merge values) and one
        b"".join makes the message: the 60 KB of literal body is never re-encoded. A gap is
        (source, key): source 0 is the header values by marker, 1 the text values by slot,
        2 the HTML values by slot.
        """
        # ASCII throughout: the email package and quoted-printable write nothing else.
        lits = [lit.encode("ascii") for lit in self._literals]
        bodies = {_TEXT_N: (1, [b.encode("ascii") for b in self._text.parts], self._text.slots),
                  _HTML_N: (2, [b.encode("ascii") for b in self._html.parts], self._html.slots)}
        parts: list[bytes] = []
        gaps: list[tuple[int, int]] = []
        cur = lits[0]
        for i, m in enumerate(self._marks, 1):
            if m in bodies:
                source, body_parts, slots = bodies[m]
                cur += body_parts[0]
                for j, slot in enumerate(slots, 1):
                    parts.append(cur)
                    gaps.append((source, slot))
                    cur = body_parts[j]
            else:
                parts.append(cur)
                gaps.append((0, m))
                cur = b""
            cur += lits[i]
        self._plan = (tuple(parts), tuple(gaps), cur)
        self._skeleton = [b""] + [piece for lit in parts for piece in (lit, b"")] + [cur]
        token = self._token_slot
        self._text_slots = tuple(sorted(set(self._text.slots) - {token}))
        self._html_slots = tuple(sorted(set(self._html.slots) - {token}))
        # Per message the gap values are laid out flat (the four header values, the reader's half of
        # the tracked links, then each distinct text slot, then each distinct HTML slot), and one
        # C-level itemgetter puts every gap in place: a slot used by 20 links costs one encoding and
        # 20 pointer copies. The tracked-link half is url-safe base64, the same bytes in both parts.
        at = {(0, m): k for k, m in enumerate((_TO_N, _SUBJECT_N, _MSGID_N, _LISTUNSUB_N))}
        at.update({(1, token): 4, (2, token): 4})
        at.update({(1, slot): 5 + k for k, slot in enumerate(self._text_slots)})
        at.update({(2, slot): 5 + len(self._text_slots) + k for k, slot in enumerate(self._html_slots)})
        picks = [at[g] for g in gaps]
        pick = operator.itemgetter(*picks) if picks else (lambda flat: ())
        self._gaps = (lambda flat: (pick(flat),)) if len(picks) == 1 else pick
        self._qp_cache: dict[str, bytes] = {}
        self._qp_html_cache: dict[str, bytes] = {}

    def list_unsubscribe(self, url: str | None, token: str | None = None) -> str:
        """List-Unsubscribe header line(s) with CRLF, or nothing. Raises HeaderValueError for a link
        that is not one line of ASCII. RFC 8058 one-click only for an
        https link whose page is known to honour the POST (Settings.one_click): advertising it
        without an endpoint is worse than not. The mailto's subject is `unsubscribe <token>`."""
        mailto = self.mailto  # per recipient: plain string work, no lists
        if mailto and token:
            mailto = f"{mailto}%20{token}"  # a token is url-safe base64: nothing to escape
        if url and (not url.isascii() or header_problem(url)):
            raise HeaderValueError("the unsubscribe link is not a one-line ASCII address")
        if not url:
            return f"List-Unsubscribe: <{mailto}>\r\n" if mailto else ""
        out = f"List-Unsubscribe: <{url}>, <{mailto}>" if mailto else f"List-Unsubscribe: <{url}>"
        if self.one_click and url[:8].lower() == "https://":
            out += "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click"
        return out + "\r\n"

    def envelope_sender(self, token: str | None) -> str | None:
        """Where this reader's bounces go (MAIL FROM, Return-Path), or None for from_email. With VERP
        it is bounces+<token>@domain: the token is url-safe base64, so nothing to check or escape."""
        if self._verp is not None and token:
            return self._verp[0] + token + self._verp[1]
        return self.return_path

    def new_message_id(self) -> str:
        """A fresh Message-ID in the sender's domain."""
        return f"<{os.urandom(12).hex()}@{self.domain}>"

    def build(self, email: str, name: str, values: list[str], msgid: str | None = None,
              token: str | None = None, head: bytes = b"") -> tuple[str, bytes]:
        """(Message-ID, message bytes) for one recipient, with msgid when it was chosen before
        (and recorded in the ledger); head (whole header lines) goes first, in the same join.
        Raises HeaderValueError for unsafe values."""
        subject = self.subject.fill(values)
        msgid = msgid or self.new_message_id()
        unsub = values[self.unsub_index] if self.unsub_index is not None else None
        to = address(name, email)
        subject = header_value(subject, "Subject")
        list_unsub = self.list_unsubscribe(unsub, token)
        tracked = values[self._token_slot] if self._token_slot >= 0 else ""
        tracked = tracked.encode("ascii") if _URLSAFE.fullmatch(tracked) else _qp_value(html.escape(tracked)).encode("ascii")
        flat = [to.encode("ascii"), subject.encode("ascii"), msgid.encode("ascii"), list_unsub.encode("ascii"), tracked]
        cache = self._qp_cache
        for i in self._text_slots:
            v = values[i]
            b = cache.get(v)
            if b is None:
                b = _qp_value(v).encode("ascii")
                if len(cache) < _QP_CACHE_MAX:
                    cache[v] = b
            flat.append(b)
        cache = self._qp_html_cache
        for i in self._html_slots:
            v = values[i]
            b = cache.get(v)
            if b is None:
                b = _qp_value(html.escape(v)).encode("ascii")
                if len(cache) < _QP_CACHE_MAX:
                    cache[v] = b
            flat.append(b)
        out = self._skeleton.copy()  # [head, literal, gap, literal, gap, …, tail]: only the gaps are set
        out[0] = head
        out[2:-1:2] = self._gaps(flat)
        return msgid, b"".join(out)


def unsubscribe_link(template: str, email: str, token: str) -> str:
    """The settings' unsubscribe_url filled for one address (values URL-encoded), by the same
    parser the settings check and `check` use: any spacing the check accepts is filled."""
    return fill_url_placeholders(template, email=email, token=token)
