"""`newsletter audience export`: the list as a subscribers CSV that can replace the user's own.

The --list rows keep every column; their status becomes what the store knows (a reader who
unsubscribed, bounced or complained, or who confirmed a sign-up again); then every confirmed
sign-up not on the list is added; a row of an address erased on request is left out. The subscribers CSV knows `subscribed`, `unsubscribed` and
`bounced`, so a complaint is written as `unsubscribed` (never sent to again either way).
Cells that a spreadsheet would run as a formula are quoted (csvcells.py). The file is
written exclusively, 0600 (it lists every reader), never through a link.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Container

from newsletter_mailer.audience.store import Audience
from newsletter_mailer.csvcells import restore, write_rows
from newsletter_mailer.errors import NewsletterError, unreadable
from newsletter_mailer.ledger import key

_CSV_STATUS = {"subscribed": "subscribed", "unsubscribed": "unsubscribed", "bounced": "bounced",
               "complained": "unsubscribed"}


def _list_rows(path: Path | None) -> tuple[list[str], list[list[str]]]:
    if path is None:
        return ["email", "name", "status"], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [[restore(v) for v in row] for row in csv.reader(f)]  # re-exporting our own file
    except OSError as exc:
        raise unreadable(path, exc) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NewsletterError(f"not a UTF-8 CSV file: {exc}", path=path) from None
    if not rows or "email" not in [h.strip().lower() for h in rows[0]]:
        raise NewsletterError("no 'email' column", path=path, line=1)
    header = rows[0]
    if "status" not in [h.strip().lower() for h in header]:
        header = header + ["status"]
    return header, rows[1:]


def table(audience: Audience, list_path: Path | None, erased: Container[str] = ()) -> tuple[list[list[str]], int]:
    """The header and rows of the exported list, and how many --list rows were left out: an address
    erased on request (`audience erase`) is not written back into the list."""
    header, rows = _list_rows(list_path)
    lower = [h.strip().lower() for h in header]
    ei, si, ni = lower.index("email"), lower.index("status"), lower.index("name") if "name" in lower else None
    known = {e.email: e.status for e in audience.rows()}
    seen: set[str] = set()
    out, left_out = [header], 0
    for row in rows:
        row = row + [""] * (len(header) - len(row))
        email = key(row[ei].strip())
        if email in erased:
            left_out += 1
            continue
        seen.add(email)
        if known.get(email) in _CSV_STATUS:
            row[si] = _CSV_STATUS[known[email]]
        out.append(row)
    for email, name in audience.signups():
        if email not in seen:
            row = [""] * len(header)
            row[ei], row[si] = email, "subscribed"
            if ni is not None:
                row[ni] = name or ""
            out.append(row)
    return out, left_out


def write(rows: list[list[str]], path: Path, force: bool) -> None:
    """Exclusively (or replacing with force), 0600, never through a link."""
    buf = io.StringIO()
    write_rows(buf, rows)  # spreadsheet-safe: a formula from the sign-up form stays text
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise NewsletterError("already exists", path=path, hint="pass --force to replace it") from None
    except OSError as exc:
        raise NewsletterError(f"cannot write: {exc.strerror or exc}", path=path) from None
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(buf.getvalue())
