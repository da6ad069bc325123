"""The one exception type the CLI turns into a single clean line."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging


class NewsletterError(Exception):
    """A problem the user can fix: says where (file, line, field) and what to do."""

    def __init__(self, message: str, *, path: object | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None, exit_code: int = 2,
                 more: tuple[NewsletterError, ...] = ()):
        self.message = message
        self.more = more  # further problems found in the same pass: --verbose lists them
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        self.exit_code = exit_code
        super().__init__(self.format())

    def format(self, count_more: bool = True) -> str:
        """One line; count_more adds how many further problems --verbose would list."""
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        hint = f" ({self.hint})" if self.hint else ""
        more = ""
        if self.more and count_more:
            n = len(self.more)
            more = f" (+{n} more problem{'s' if n > 1 else ''}: --verbose lists them)"
        return _capped(one_line(f"{where}{field}{self.message}{hint}{more}"))

    def all_lines(self) -> list[str]:
        """This problem and every further one, one line each."""
        return [self.format(count_more=False)] + [m.format() for m in self.more]


# Line breaks, terminal escapes and bidi overrides: a value quoted in an error (a key, a path,
# a URL from the file) must neither break the one-line message nor rewrite the terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _capped(text: str, limit: int = 1000) -> str:
    """A pasted-in 100,000-character value quoted in an error still leaves one readable line."""
    if len(text) <= limit:
        return text
    return text[: limit - 300] + f" …[{len(text) - limit + 1:,} characters]… " + text[-299:]


def one_line(text: str) -> str:
    """text with control and bidi characters shown as escapes (\\n, \\x1b, \\u202e)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def unreadable(path: object, exc: OSError) -> NewsletterError:
    """The one wording for a file that cannot be opened, whoever opens it."""
    if isinstance(exc, FileNotFoundError):
        return NewsletterError("file not found", path=path, hint="check the path")
    if isinstance(exc, IsADirectoryError):
        return NewsletterError("is a folder, not a file", path=path)
    return NewsletterError(f"cannot read: {exc.strerror or exc}", path=path)


SECRET_VARS = ("SENDGRID_API_KEY", "SMTP_PASSWORD", "NEWSLETTER_SECRET", "DKIM_PRIVATE_KEY")
REDACTED = "[redacted]"

# Credentials recognisable by their shape, whatever variable they came from: a bearer token
# in a logged request header, a SendGrid key pasted anywhere.
_CREDENTIAL = re.compile(r"(Bearer\s+)[^'\"\s,}]+|SG\.[A-Za-z0-9_.\-]+")


def _forms(secret: str) -> tuple[str, ...]:
    """A secret as written and in base64, padded and not: SMTP AUTH sends it base64-encoded,
    and a hostile server can echo that exchange back in its error reply."""
    import base64

    b64 = base64.b64encode(secret.encode("utf-8", "surrogatepass")).decode("ascii")
    return secret, b64, b64.rstrip("=")


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """The one redactor: secrets from the environment, extra_secrets (e.g. a key read from a
    context's env, SMTP's PLAIN exchange "\\0user\\0password"), their base64 forms and
    credential-shaped strings never reach a terminal, a log or a file."""
    import os

    for value in (*(os.environ.get(var) for var in SECRET_VARS), *extra_secrets):
        if value and len(value) >= 4:
            for form in _forms(value):
                text = text.replace(form, REDACTED)
    return _CREDENTIAL.sub(lambda m: (m.group(1) or "") + REDACTED, text)


class RedactingFilter:
    """Redacts every record passing through a logger or handler (see redact_log). Duck-typed
    like a logging.Filter, so importing this module does not import logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def redact_log(target: logging.Logger | logging.Handler) -> None:
    """Install the redacting filter once. Called by whoever first needs it (the --verbose
    handler, the SendGrid provider for python_http_client's header log), never at import."""
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
