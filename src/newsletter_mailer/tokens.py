"""Reader tokens: the address sealed (AES-SIV) under a key derived from the newsletter secret.

A token is self-contained: the web app needs no copy of the list to know whose link it
is, and nobody can forge or alter one. The list id and the token's purpose are the
associated data, so a token made for another list, another secret or another purpose
does not open. AES-SIV is deterministic, which suits unsubscribe links (the same reader
always gets the same link; nothing random to store) and is still a proper AEAD: the
ciphertext reveals nothing but the length. Tokens are url-safe base64 without padding;
an unsubscribe token is 22 characters plus 4/3 of the address's length (and of the
issue slug's plus one, when the issue is sealed with it). Readers return
None for anything that does not open (tampered, truncated, garbage): never raise.

The list id sealed is listid.py's stable id (the `<…>` of List-Id, never its display name),
so a rename keeps every delivered link working. Readers take several secrets (a rotation keeps
the old one readable for a while) and several list ids (a previous id, and the whole List-Id
header that tokens made before the stable id were sealed to); writers use the first of each.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from functools import lru_cache
from typing import Sequence, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

UNSUBSCRIBE = b"unsubscribe"
CONFIRM = b"confirm"
MAX_TOKEN = 1024  # longer input is refused before decoding
_INFO = b"newsletter-mailer reader tokens v1"
Secrets = Union[bytes, Sequence[bytes]]  # the current secret first, then still-readable old ones
ListIds = Union[str, Sequence[str]]  # the current stable id first, then previous ids and old headers


def _all(value):
    return (value,) if isinstance(value, (bytes, str)) else tuple(value)


@lru_cache(maxsize=8)
def _cipher(secret: bytes) -> AESSIV:
    """Derived once per secret: HKDF-SHA256 to a 256-bit AES-SIV key (AES-128 in SIV mode)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
    return AESSIV(key)


def _seal(secret: Secrets, list_id: ListIds, purpose: bytes, data: bytes) -> str:
    sealed = _cipher(_all(secret)[0]).encrypt(data, [_all(list_id)[0].encode("utf-8"), purpose])
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def _open(secret: Secrets, list_id: ListIds, purpose: bytes, token: str) -> bytes | None:
    """The first (secret, list id) pair the token opens under: the current pair costs one try."""
    if not isinstance(token, str) or not 22 <= len(token) <= MAX_TOKEN or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            return None  # one canonical spelling per token
    except (ValueError, binascii.Error):
        return None
    ids = [i.encode("utf-8") for i in _all(list_id)]
    for key in _all(secret):
        cipher = _cipher(key)
        for lid in ids:
            try:
                return cipher.decrypt(raw, [lid, purpose])
            except (InvalidTag, ValueError):
                continue
    return None


# `newsletter doctor --online` seals this address in a one-click token: the app answers it as it
# would a reader's and records nothing (.invalid is reserved: no reader can have it, RFC 2606).
PROBE = "one-click-probe@newsletter.invalid"


def make_unsubscribe(secret: Secrets, list_id: ListIds, email: str, issue: str | None = None) -> str:
    """The reader's link token; with the issue slug sealed too, so the store records where the
    reader left from. Deterministic per (reader, issue); without an issue it is the v1 token."""
    data = email.lower().encode("utf-8")
    if issue:
        data += b"\0" + issue.replace("\0", "").encode("utf-8")
    return _seal(secret, list_id, UNSUBSCRIBE, data)


def read_unsubscribe(secret: Secrets, list_id: ListIds, token: str) -> tuple[str, str | None] | None:
    """(address, issue slug or None) the token was made for, or None. Tokens made before the
    issue was sealed (an address alone: no NUL) read as (address, None)."""
    data = _open(secret, list_id, UNSUBSCRIBE, token)
    try:
        text = data.decode("utf-8") if data else ""
    except UnicodeDecodeError:
        return None
    email, _, issue = text.partition("\0")
    return (email, issue or None) if email else None


def make_confirm(secret: Secrets, list_id: ListIds, email: str, name: str | None, expires: int) -> str:
    """A sign-up's confirmation: address, name and expiry (Unix seconds) sealed together."""
    body = email.lower().encode("utf-8") + b"\0" + (name or "").replace("\0", "").encode("utf-8")
    return _seal(secret, list_id, CONFIRM, struct.pack(">I", expires) + body)


def read_confirm(secret: Secrets, list_id: ListIds, token: str, now: float | None = None
                 ) -> tuple[str, str | None] | None:
    """(address, name) when the token opens and has not expired, else None."""
    data = _open(secret, list_id, CONFIRM, token)
    if not data or len(data) < 5:
        return None
    (expires,) = struct.unpack(">I", data[:4])
    if expires < (time.time() if now is None else now):
        return None
    try:
        email, _, name = data[4:].decode("utf-8").partition("\0")
    except UnicodeDecodeError:
        return None
    return email, name or None


# -- tracked links (tracked_links.py, web/clicks.py) ----------------------------------------------
# A tracked href is <base>/c/<link code>.<reader token>. The reader token seals (issue, address)
# once per message, like the unsubscribe token but for another purpose (a shared link must never
# unsubscribe anyone); the link code is a MAC of (list id, issue, link id, URL as sent), the same
# for every reader, so a message's N links cost one seal, not N. Either half altered does not open;
# halves of one issue's genuine tokens combine only into a click that reader could have made.

CLICK = b"click"
_MAC_INFO = b"newsletter-mailer link codes v1"
_LINK_MAC = 9  # bytes of HMAC-SHA256 kept: 72 bits, checked by the server only, never offline


@lru_cache(maxsize=8)
def _mac_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(secret)


def _link_mac(secret: bytes, list_id: str, issue: str, link: int, url: str, in_message: int = 0) -> bytes:
    parts = [list_id.encode("utf-8"), issue.encode("utf-8"), str(link).encode(), url.encode("utf-8")]
    if in_message:
        parts.append(str(in_message).encode())
    return hmac.digest(_mac_key(secret), b"\0".join(parts), "sha256")[:_LINK_MAC]


def make_link_code(secret: Secrets, list_id: ListIds, issue: str, link: int, url: str, in_message: int = 0) -> str:
    """The per-issue half of a tracked link: its id and a MAC binding it to the issue and its URL; with
    in_message, also how many tracked links the reader's message holds (an audience's edition may hold
    fewer than the issue: the scanner rule needs the message's own count)."""
    head = struct.pack(">H", link) + (struct.pack(">H", in_message) if in_message else b"")
    raw = head + _link_mac(_all(secret)[0], _all(list_id)[0], issue, link, url, in_message)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def read_link_code(code: str) -> tuple[int, int] | None:
    """(link id, links in the message or 0) a code claims, checked later against the stored URL by
    check_link_code. 15 characters: made before the message's count was carried; 18: with it."""
    if not isinstance(code, str) or len(code) not in (15, 18) or not code.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
    except (ValueError, binascii.Error):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != code:
        return None
    if len(raw) == 2 + _LINK_MAC:
        return struct.unpack(">H", raw[:2])[0], 0
    if len(raw) == 4 + _LINK_MAC:
        link, in_message = struct.unpack(">HH", raw[:4])
        return (link, in_message) if in_message else None
    return None


def read_link_id(code: str) -> int | None:
    """The link id a code claims."""
    found = read_link_code(code)
    return found[0] if found else None


def check_link_code(secret: Secrets, list_id: ListIds, issue: str, code: str, url: str) -> bool:
    """Whether code was made for this issue's link with exactly this URL (under any readable key)."""
    found = read_link_code(code)
    if found is None:
        return False
    link, in_message = found
    raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
    given = raw[4:] if in_message else raw[2:]
    return any(hmac.compare_digest(given, _link_mac(key, lid, issue, link, url, in_message))
               for key in _all(secret) for lid in _all(list_id))


def make_click_reader(secret: Secrets, list_id: ListIds, issue: str, email: str, variant: str | None = None) -> str:
    """The per-message half of a tracked link: (issue, address[, subject test variant]) sealed, one
    seal a message."""
    data = issue.replace("\0", "").encode("utf-8") + b"\0" + email.lower().encode("utf-8")
    return _seal(secret, list_id, CLICK, data + (b"\0" + variant.encode("ascii") if variant else b""))


def read_click_reader(secret: Secrets, list_id: ListIds, token: str) -> tuple[str, str, str | None] | None:
    """(issue, address, variant or None) the reader half was sealed with, or None."""
    data = _open(secret, list_id, CLICK, token)
    try:
        issue, sep, rest = (data or b"").decode("utf-8").partition("\0")
    except UnicodeDecodeError:
        return None
    email, _, variant = rest.partition("\0")
    return (issue, email, variant or None) if sep and issue and email else None


def reader_key(secret: Secrets, issue: str, email: str) -> str:
    """A keyed hash of (issue, reader) that makes click counts unique without keeping the address;
    a new one per issue, so two issues' rows cannot be joined; dropped after [tracking] keep_days."""
    msg = b"reader\0" + issue.encode("utf-8") + b"\0" + email.lower().encode("utf-8")
    return hmac.digest(_mac_key(_all(secret)[0]), msg, "sha256")[:16].hex()



# Without [tracking] per_reader the server never needs the address, so the reader half carries none:
# a keyed pseudonym of (issue, reader) and a MAC binding it, the subject-test variant and the issue
# to the list. Keyed BLAKE2s (a MAC by design, RFC 7693) rather than HMAC-SHA256: a message's reader
# half is on the hot path, and two short BLAKE2s cost a third of one AES-SIV seal (benchmarks/RESULTS.md).
# The issue goes in clear in the per-send half (<link code>.<issue>.), the same for every reader.
_PSEUDONYM, _PSEUDONYM_MAC = 16, 8
_PSEUDONYM_LEN = 32  # characters of base64 for the 24 bytes; a subject-test variant adds one letter
_READER_PERSON, _MAC_PERSON = b"nmreader", b"nmclkmac"  # BLAKE2s personalisation: 8 bytes


def _pseudonym_hashes(key: bytes, list_id: str, issue: str) -> tuple:
    """The two keyed BLAKE2s states with the per-send prefix already absorbed (copied per reader)."""
    reader = hashlib.blake2s(key=key, digest_size=_PSEUDONYM, person=_READER_PERSON)
    reader.update(issue.encode("utf-8") + b"\0")
    mac = hashlib.blake2s(key=key, digest_size=_PSEUDONYM_MAC, person=_MAC_PERSON)
    mac.update(list_id.encode("utf-8") + b"\0" + issue.encode("utf-8") + b"\0")
    return reader, mac


def click_pseudonym_maker(secret: Secrets, list_id: ListIds, issue: str):
    """make(email, variant=None) → the reader half of this issue's tracked links, without the address;
    keys and prefixes absorbed once per send, so a message costs two short BLAKE2s."""
    reader, mac = _pseudonym_hashes(_mac_key(_all(secret)[0]), _all(list_id)[0], issue)
    macs = {}
    for v in ("", "A", "B"):
        macs[v] = mac.copy()
        macs[v].update(v.encode("ascii") + b"\0")
    encode, urlsafe = binascii.b2a_base64, bytes.maketrans(b"+/", b"-_")  # 24 bytes: no padding

    def make(email: str, variant: str | None = None) -> str:
        r = reader.copy()
        r.update(email.lower().encode("utf-8"))
        p = r.digest()
        v = variant if variant in ("A", "B") else ""
        m = macs[v].copy()
        m.update(p)
        return encode(p + m.digest(), newline=False).translate(urlsafe).decode("ascii") + v
    return make


def read_click_pseudonym(secret: Secrets, list_id: ListIds, issue: str, token: str) -> tuple[str, str | None] | None:
    """(reader key, variant or None) when the reader half was made for this issue under a readable
    secret and list id, else None."""
    if not isinstance(token, str) or len(token) not in (_PSEUDONYM_LEN, _PSEUDONYM_LEN + 1) or not token.isascii():
        return None
    variant = token[_PSEUDONYM_LEN:]
    if variant not in ("", "A", "B"):
        return None
    try:
        raw = base64.urlsafe_b64decode(token[:_PSEUDONYM_LEN])
    except (ValueError, binascii.Error):
        return None
    if base64.urlsafe_b64encode(raw).decode("ascii") != token[:_PSEUDONYM_LEN]:
        return None
    p, given = raw[:_PSEUDONYM], raw[_PSEUDONYM:]
    for key in map(_mac_key, _all(secret)):
        for lid in _all(list_id):
            m = _pseudonym_hashes(key, lid, issue)[1]
            m.update(variant.encode("ascii") + b"\0" + p)
            if hmac.compare_digest(given, m.digest()):
                return "p" + p.hex(), variant or None
    return None
