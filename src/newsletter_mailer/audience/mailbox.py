"""Where `newsletter inbox` reads from: an IMAP folder, an mbox file or a Maildir.

Each source yields (handle, raw bytes) and is told which handles were recognised. Only
IMAP marks anything in the mailbox (a keyword, and a move when asked); an mbox or a
Maildir is the user's file and is only ever read, so what was recorded is remembered in
the audience store instead. Unrecognised messages are never flagged, moved or deleted.
"""

from __future__ import annotations

import imaplib
import mailbox as stdlib_mailbox
import os
import ssl
from pathlib import Path
from typing import Iterator, Mapping

from newsletter_mailer import mailserver
from newsletter_mailer.errors import NewsletterError, redact

KEYWORD = "$NewsletterSeen"
_FETCH_CHUNK = 100


class FileSource:
    """An mbox file or a Maildir folder, read-only."""

    handle_name = "key"  # what names one message in the lines --verbose prints

    def __init__(self, path: Path, kind: str):
        self.name = f"{kind} {path}"
        if kind == "mbox" and path.is_dir():
            raise NewsletterError("is a folder, not an mbox file", path=path, hint="for a Maildir folder use --maildir")
        if kind == "mbox" and not path.is_file():
            raise NewsletterError("mbox file not found", path=path, hint="check the path")
        if kind == "maildir" and not (path / "cur").is_dir():
            raise NewsletterError("not a Maildir (no cur/ folder)", path=path, hint="check the path")
        self.box = stdlib_mailbox.mbox(path, create=False) if kind == "mbox" else \
            stdlib_mailbox.Maildir(path, factory=None, create=False)

    def count(self) -> int:
        return len(self.box)

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for handle in self.box.iterkeys():
            yield str(handle), self.box.get_bytes(handle)

    def done(self, handles: list[str]) -> None:
        """Nothing: the store remembers what was recorded; the user's file stays as it was."""

    def close(self) -> None:
        self.box.close()


def _env(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise NewsletterError(f"{name} is not set", hint="--imap reads IMAP_HOST, IMAP_USERNAME, IMAP_PASSWORD "
                                                         "and optionally IMAP_PORT from the environment")
    return value


class ImapSource:
    """One IMAP folder over TLS (IMAPS, or STARTTLS when IMAP_SECURITY=starttls)."""

    handle_name = "UID"

    def __init__(self, env: Mapping[str, str], folder: str, move_to: str | None, readonly: bool):
        host, user, password = _env(env, "IMAP_HOST"), _env(env, "IMAP_USERNAME"), _env(env, "IMAP_PASSWORD")
        security = (env.get("IMAP_SECURITY") or "ssl").lower()
        if security not in ("ssl", "starttls"):
            raise NewsletterError(f"IMAP_SECURITY '{security}' is not ssl or starttls",
                                  hint="ssl for port 993, starttls for port 143")
        starttls = security == "starttls"
        port = mailserver.port(env.get("IMAP_PORT") or str(143 if starttls else 993), "IMAP_PORT", 993)
        self.name, self.folder, self.move_to = f"imap {host}:{port}/{folder}", folder, move_to
        self._secret = (password,)
        context = mailserver.tls_context(env.get("IMAP_CA_FILE"), "IMAP",
                                         "check IMAP_CA_FILE (relative to the current folder)")
        try:
            if starttls:
                self.imap = imaplib.IMAP4(host, port, timeout=30)
                self.imap.starttls(context)
            else:
                self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=30)
        except ssl.SSLCertVerificationError as exc:
            raise self._error(f"TLS certificate check failed for the IMAP server {host}:{port}: "
                              f"{exc.verify_message or exc.reason}",
                              mailserver.certificate_hint(exc, "IMAP_HOST", "IMAP_CA_FILE")) from None
        except ssl.SSLError as exc:
            raise self._error(f"TLS failure with {host}:{port}: {exc.reason or exc}",
                              "check IMAP_SECURITY and IMAP_PORT: 993 wants ssl, 143 starttls") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise self._error(f"cannot reach the IMAP server {host}:{port}: {exc}") from None
        try:
            self.imap.login(user, password)
        except imaplib.IMAP4.error:
            self.imap.shutdown()
            raise self._error(f"IMAP login refused for {user} at {host}:{port}",
                              "check IMAP_USERNAME and IMAP_PASSWORD") from None
        self._ok(self.imap.select(_quote(folder), readonly=readonly), f"cannot open the folder {folder}")

    def _error(self, message: str, hint: str | None = None) -> NewsletterError:
        return NewsletterError(redact(message, self._secret), hint=hint)

    def _ok(self, answer: tuple[str, list], what: str) -> list:
        typ, data = answer
        if typ != "OK":
            detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise self._error(f"{what}: {detail}")
        return data

    def _unseen(self) -> list[bytes]:
        data = self._ok(self.imap.uid("SEARCH", None, "UNKEYWORD", KEYWORD), "IMAP search failed")
        return data[0].split() if data and data[0] else []

    def count(self) -> int:
        return len(self._unseen())

    def messages(self) -> Iterator[tuple[str, bytes]]:
        """BODY.PEEK: reading sets no \\Seen flag, so what is not recognised stays exactly as it was."""
        uids = self._unseen()
        for i in range(0, len(uids), _FETCH_CHUNK):
            data = self._ok(self.imap.uid("FETCH", b",".join(uids[i:i + _FETCH_CHUNK]), "(UID BODY.PEEK[])"),
                            "IMAP fetch failed")
            for item in data:
                if isinstance(item, tuple):
                    uid = item[0].split(b"UID ", 1)[1].split()[0].decode("ascii")
                    yield uid, item[1]

    def done(self, handles: list[str]) -> None:
        if not handles:
            return
        uids = ",".join(handles)
        self._ok(self.imap.uid("STORE", uids, "+FLAGS", f"({KEYWORD})"), "cannot flag messages")
        if self.move_to:
            self.imap.create(_quote(self.move_to))  # NO when it exists: fine
            self._ok(self.imap.uid("MOVE", uids, _quote(self.move_to)), f"cannot move messages to {self.move_to}")

    def close(self) -> None:
        try:
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _quote(folder: str) -> str:
    if any(c in folder for c in "\r\n\0"):
        raise NewsletterError("a folder name cannot hold a line break", field="--folder")
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def open_source(*, imap: bool, mbox: Path | None, maildir: Path | None, folder: str, move_to: str | None,
                dry_run: bool, env: Mapping[str, str] | None = None):
    """The one source the command line names (exactly one of --imap, --mbox, --maildir)."""
    chosen = [n for n, v in (("--imap", imap), ("--mbox", mbox), ("--maildir", maildir)) if v]
    if len(chosen) != 1:
        raise NewsletterError("name one mailbox: --imap, --mbox PATH or --maildir PATH"
                              + (f" (got {', '.join(chosen)})" if chosen else ""))
    if move_to and not imap:
        raise NewsletterError("--move-to works with --imap only: mbox and Maildir files are never changed")
    if imap:
        return ImapSource(os.environ if env is None else env, folder, move_to, readonly=dry_run)
    return FileSource(mbox, "mbox") if mbox else FileSource(maildir, "maildir")
