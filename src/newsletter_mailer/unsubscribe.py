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

from newsletter_mailer.errors import NewsletterError

SECRET_ENV = "NEWSLETTER_SECRET"
SECRET_FILE = "secret"


def load_secret(state_dir: Path, env: dict[str, str], *, create: bool = True) -> tuple[bytes, str | None]:
    """(key, note) — note says when a secret was generated, so the user keeps it."""
    value = env.get(SECRET_ENV)
    if value:
        return value.encode("utf-8"), None
    path = state_dir / SECRET_FILE
    try:
        return path.read_text(encoding="ascii").strip().encode("ascii"), None
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise NewsletterError(f"cannot read the unsubscribe secret: {exc}", path=path) from None
    if not create:
        return b"dry-run-not-a-secret", None
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
    except OSError as exc:
        raise NewsletterError(f"cannot create the unsubscribe secret: {exc.strerror}", path=path) from None
    note = (f"generated an unsubscribe secret in {path} (mode 0600): keep it, or set {SECRET_ENV}; "
            "your unsubscribe page needs the same key to check links")
    return path.read_text(encoding="ascii").strip().encode("ascii"), note


def token(key: bytes, email: str) -> str:
    return hmac.new(key, email.lower().encode("utf-8"), hashlib.sha256).hexdigest()[:32]

