"""Personal unsubscribe links: an HMAC of the address, so nobody can unsubscribe someone else.

The key is NEWSLETTER_SECRET, or a secret generated once into the state folder
(mode 0600). The web endpoint that receives the link recomputes the same HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from newsletter_mailer import files
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.folder import state_folder

SECRET_ENV = "NEWSLETTER_SECRET"
SECRET_FILE = "secret"


MIN_ENV_CHARS = 16
MIN_FILE_BYTES = 32


def load_secret(state_dir: Path, env: dict[str, str], *, create: bool = True) -> tuple[bytes, str | None]:
    """(key, note) — note says when a secret was generated, so the user keeps it.

    A short or empty key makes every reader's token forgeable, and one others can read lets them
    forge it too: both are refused, never used.
    """
    value = env.get(SECRET_ENV)
    if value:
        if len(value) < MIN_ENV_CHARS:
            raise NewsletterError(f"{SECRET_ENV} is {len(value)} characters: too short to keep links unforgeable",
                                  hint=f"use at least {MIN_ENV_CHARS} random characters, e.g. `openssl rand -hex 32`")
        return value.encode("utf-8"), None
    path = state_folder(state_dir, create=create) / SECRET_FILE
    try:
        return _read_secret(path), None
    except FileNotFoundError:
        pass
    if not create:
        return b"dry-run-not-a-secret", None
    try:
        files.create_new(path, secrets.token_hex(32) + "\n", files.PRIVATE, fsync=True)  # on disk before use
    except OSError as exc:
        raise NewsletterError(f"cannot create the unsubscribe secret: {exc.strerror}", path=path) from None
    note = (f"generated an unsubscribe secret in {path} (mode 0600): keep it, or set {SECRET_ENV}; "
            "your unsubscribe page needs the same key to check links")
    return _read_secret(path), note


def _read_secret(path: Path) -> bytes:
    """The secret file's key; FileNotFoundError when there is none. Never through a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise NewsletterError(f"cannot read the unsubscribe secret: {exc.strerror or exc}", path=path,
                              hint="it must be a file of yours, not a link") from None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_mode & 0o077:
            raise NewsletterError("the unsubscribe secret is readable by others: they could forge links", path=path,
                                  hint=f"run `chmod 600 {path}`")
        raw = f.read().strip()
    if len(raw) < MIN_FILE_BYTES:
        raise NewsletterError(f"the unsubscribe secret is {len(raw)} bytes: too short to keep links unforgeable",
                              path=path, hint=f"delete it to have a new one made (links already sent stop working), "
                                              f"or set {SECRET_ENV}")
    return raw


def token(key: bytes, email: str) -> str:
    return hmac.new(key, email.lower().encode("utf-8"), hashlib.sha256).hexdigest()[:32]

