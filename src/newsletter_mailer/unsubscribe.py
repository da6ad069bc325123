"""Personal unsubscribe links: an HMAC of the address, so nobody can unsubscribe someone else.

The key is NEWSLETTER_SECRET (machine-made randomness only: secret_strength.py), or 32 random
bytes generated once into the state folder (mode 0600). The web endpoint that receives the link
recomputes the same HMAC. `newsletter secret rotate` moves the key to `secret.previous` with an
expiry, so links already delivered keep opening until then (NEWSLETTER_PREVIOUS_SECRETS with
an environment secret).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from newsletter_mailer import files, secret_strength
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.folder import state_folder

SECRET_ENV = "NEWSLETTER_SECRET"
PREVIOUS_ENV = "NEWSLETTER_PREVIOUS_SECRETS"  # comma-separated: old secrets still readable
SECRET_FILE = "secret"
PREVIOUS_FILE = "secret.previous"  # lines of "<expires, Unix seconds> <old secret>"


MIN_ENV_CHARS = secret_strength.MIN_CHARS
MIN_FILE_BYTES = 32


def load_secret(state_dir: Path, env: dict[str, str], *, create: bool = True) -> tuple[bytes, str | None]:
    """(key, note) — note says when a secret was generated, so the user keeps it.

    A short or empty key makes every reader's token forgeable, and one others can read lets them
    forge it too: both are refused, never used.
    """
    value = env.get(SECRET_ENV)
    if value:
        return _strong(value, SECRET_ENV), None
    path = state_folder(state_dir, create=create) / SECRET_FILE
    try:
        return _read_secret(path), None
    except FileNotFoundError:
        pass
    if not create:
        return b"dry-run-not-a-secret", None
    try:
        files.create_new(path, _new_secret(), files.PRIVATE, fsync=True)  # on disk before use
    except FileExistsError:  # made meanwhile by another command: that one is the key
        return _read_secret(path), None
    except OSError as exc:
        raise NewsletterError(f"cannot create the unsubscribe secret: {exc.strerror}", path=path) from None
    note = (f"generated an unsubscribe secret in {path} (mode 0600): keep it, or set {SECRET_ENV}; "
            "your unsubscribe page needs the same key to check links")
    return _read_secret(path), note


def load_secrets(state_dir: Path, env: dict[str, str], *, create: bool = True,
                 now: float | None = None) -> tuple[tuple[bytes, ...], str | None]:
    """(keys, note): the current key first, then those a rotation keeps readable until they expire."""
    key, note = load_secret(state_dir, env, create=create)
    if env.get(SECRET_ENV):
        old = [_strong(v.strip(), PREVIOUS_ENV) for v in env.get(PREVIOUS_ENV, "").split(",") if v.strip()]
    else:
        old = [k for expires, k in _previous(state_dir / PREVIOUS_FILE) if expires > (time.time() if now is None else now)]
    return (key, *[k for k in old if k != key]), note


def rotate(state_dir: Path, env: dict[str, str], keep_days: int, now: float | None = None) -> str:
    """A new secret in the state folder; the old one stays readable for keep_days. One line to show."""
    if env.get(SECRET_ENV):
        raise NewsletterError(f"{SECRET_ENV} is set: rotate it where it is set", hint=(
            f"set {PREVIOUS_ENV} to the current value (comma-separated with any older ones), then {SECRET_ENV} "
            f"to a new one ({secret_strength.HOW}); drop the old one from {PREVIOUS_ENV} after {keep_days} days"))
    now = time.time() if now is None else now
    folder = state_folder(state_dir, create=True)
    current, _ = load_secret(folder, {}, create=True)
    kept = [(e, k) for e, k in _previous(folder / PREVIOUS_FILE) if e > now and k != current]
    kept.append((int(now + keep_days * 86400), current))
    lines = "".join(f"{e} {k.decode('ascii')}\n" for e, k in kept)
    try:
        files.write_file(folder / PREVIOUS_FILE, lines, files.PRIVATE, fsync=True)  # before the old key is gone
        files.write_file(folder / SECRET_FILE, _new_secret(), files.PRIVATE, fsync=True)
    except OSError as exc:
        raise NewsletterError(f"cannot rotate the secret: {exc.strerror or exc}", path=folder) from None
    until = time.strftime("%Y-%m-%d", time.gmtime(now + keep_days * 86400))
    return (f"new secret in {folder / SECRET_FILE}; links sealed with the old one keep working until {until} "
            f"(UTC); restart `newsletter serve` to use it")


def _new_secret() -> str:
    return secrets.token_hex(32) + "\n"  # 32 random bytes


def _strong(value: str, name: str) -> bytes:
    why = secret_strength.problem(value, name)
    if why:
        raise NewsletterError(why, hint=secret_strength.HOW)
    return value.encode("utf-8")


def _previous(path: Path) -> list[tuple[int, bytes]]:
    """(expires, key) of each old secret a rotation kept; none when the file is missing."""
    try:
        raw = _read_secret(path)
    except FileNotFoundError:
        return []
    kept = []
    for line in raw.splitlines():
        expires, _, key = line.strip().partition(b" ")
        if not expires.isdigit() or len(key) < MIN_FILE_BYTES:
            raise NewsletterError("the previous secrets file has a line that is not '<expires> <secret>'", path=path,
                                  hint="restore it from a backup, or delete it (links sealed with old secrets "
                                       "stop working)")
        kept.append((int(expires), key))
    return kept


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

