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
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

UNSUBSCRIBE = b"unsubscribe"
CONFIRM = b"confirm"
MAX_TOKEN = 1024  # longer input is refused before decoding
_INFO = b"newsletter-mailer reader tokens v1"


@lru_cache(maxsize=8)
def _cipher(secret: bytes) -> AESSIV:
    """Derived once per secret: HKDF-SHA256 to a 256-bit AES-SIV key (AES-128 in SIV mode)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
    return AESSIV(key)


def _seal(secret: bytes, list_id: str, purpose: bytes, data: bytes) -> str:
    sealed = _cipher(secret).encrypt(data, [list_id.encode("utf-8"), purpose])
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def _open(secret: bytes, list_id: str, purpose: bytes, token: str) -> bytes | None:
    if not isinstance(token, str) or not 22 <= len(token) <= MAX_TOKEN or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            return None  # one canonical spelling per token
        return _cipher(secret).decrypt(raw, [list_id.encode("utf-8"), purpose])
    except (InvalidTag, ValueError, binascii.Error):
        return None


def make_unsubscribe(secret: bytes, list_id: str, email: str, issue: str | None = None) -> str:
    """The reader's link token; with the issue slug sealed too, so the store records where the
    reader left from. Deterministic per (reader, issue); without an issue it is the v1 token."""
    data = email.lower().encode("utf-8")
    if issue:
        data += b"\0" + issue.replace("\0", "").encode("utf-8")
    return _seal(secret, list_id, UNSUBSCRIBE, data)


def read_unsubscribe(secret: bytes, list_id: str, token: str) -> tuple[str, str | None] | None:
    """(address, issue slug or None) the token was made for, or None. Tokens made before the
    issue was sealed (an address alone: no NUL) read as (address, None)."""
    data = _open(secret, list_id, UNSUBSCRIBE, token)
    try:
        text = data.decode("utf-8") if data else ""
    except UnicodeDecodeError:
        return None
    email, _, issue = text.partition("\0")
    return (email, issue or None) if email else None


def make_confirm(secret: bytes, list_id: str, email: str, name: str | None, expires: int) -> str:
    """A sign-up's confirmation: address, name and expiry (Unix seconds) sealed together."""
    body = email.lower().encode("utf-8") + b"\0" + (name or "").replace("\0", "").encode("utf-8")
    return _seal(secret, list_id, CONFIRM, struct.pack(">I", expires) + body)


def read_confirm(secret: bytes, list_id: str, token: str, now: float | None = None
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
