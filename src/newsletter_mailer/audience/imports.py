"""Statuses from another tool's CSV export, for the audience store (`newsletter audience import`).

Liberal on purpose: exports differ between tools and versions. Recognised:
- listmonk: `email`, `name`, `status` (`enabled` → subscribed, `blocklisted` → unsubscribed,
  `disabled` skipped) and, in per-list exports, a subscription status column
  (`subscription_status`; `confirmed`, `unconfirmed` → pending, `unsubscribed`);
- Mailchimp: the three files of an audience export, column `Email Address` (`First Name`,
  `Last Name`). It has no status column: an `UNSUB_TIME` column (or a file name with
  "unsubscribed") means unsubscribed, `CLEAN_TIME` (or "cleaned") means bounced, otherwise
  subscribed; `UNSUB_REASON` becomes the reason;
- this project's own statuses in a `status` column (as in a subscribers CSV).
Any other CSV is refused: a plain list of addresses says nothing about consent, so it is never
read as confirmed sign-ups. `--status` imports such a list with the status given, on purpose.
When several status columns disagree the stronger wins (complained > bounced >
unsubscribed > subscribed > pending). Rows without a valid address are skipped, by line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Container

from newsletter_mailer import addresses
from newsletter_mailer.audience.erasure import REASON
from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.csvcells import restore
from newsletter_mailer.errors import NewsletterError, unreadable
from newsletter_mailer.ledger import key
from newsletter_mailer.subscribers import EMAIL_COLUMNS

_EMAIL = EMAIL_COLUMNS  # the one table of address headers, shared with `send --list`
_STATUS_COLUMNS = ("status", "subscription_status", "subscription status")
_MAP = {
    "enabled": "subscribed", "confirmed": "subscribed", "subscribed": "subscribed", "active": "subscribed",
    "unconfirmed": "pending", "pending": "pending",
    "blocklisted": "unsubscribed", "blacklisted": "unsubscribed", "unsubscribed": "unsubscribed",
    "cleaned": "bounced", "bounced": "bounced", "complained": "complained",
}
_RANK = ("pending", "subscribed", "unsubscribed", "bounced", "complained")
PLAIN_STATUSES = ("subscribed", "unsubscribed", "bounced", "complained")  # what --status may say of a plain list
EXPECTED = ("listmonk's email and status columns, Mailchimp's Email Address, "
            "or a subscribers CSV with a status column")


@dataclass
class Imported:
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)  # the changes that changed a status in the store
    started: int = 0  # readers started in a sequence (--start-sequence)

    def counts(self, changes: list[Change] | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes if changes is None else changes:
            out[c.status] = out.get(c.status, 0) + 1
        return out


def _file_default(path: Path, columns: set[str]) -> str:
    """Mailchimp's export says the status by its file (and its extra columns), not by a column."""
    name = path.name.lower()
    if "unsub_time" in columns or "unsubscribed" in name:
        return "unsubscribed"
    if "clean_time" in columns or "cleaned" in name:
        return "bounced"
    return "subscribed"


def _name(row: dict[str, str]) -> str | None:
    name = (row.get("name") or " ".join(filter(None, (row.get("first name"), row.get("last name"))))).strip()
    return " ".join(name.split())[:200] or None


def _status(row: dict[str, str], default: str) -> str | None:
    """The strongest status the row's columns say; None for a row to skip (listmonk's `disabled`)."""
    found = []
    for col in _STATUS_COLUMNS:
        raw = (row.get(col) or "").strip().lower()
        if raw in _MAP:
            found.append(_MAP[raw])
        elif raw:
            return None
    return max(found, key=_RANK.index) if found else default


def read_export(path: Path, status: str | None = None, erased: Container[str] = ()) -> Imported:
    """The changes a CSV export asks for; NewsletterError when it is not such a file. `status`:
    what every row of a plain list (no status of its own) is, as the operator said."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read(path, csv.reader(f), status, erased)
    except OSError as exc:
        raise unreadable(path, exc) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NewsletterError(f"not a UTF-8 CSV file: {exc}", path=path) from None


def _default_status(path: Path, header: list[str], status: str | None) -> str:
    """Every row's status unless a column says otherwise: Mailchimp's by its file; a plain list's
    only from --status (never assumed: "subscribed" would mail people who never said yes)."""
    known = "email address" in header or any(h in _STATUS_COLUMNS for h in header)
    if known and status is not None:
        raise NewsletterError("--status is for a plain list of addresses: this file says each row's status",
                              path=path, field="--status", hint="leave --status out")
    if known:
        return _file_default(path, set(header))
    if status is None:
        raise NewsletterError("not an export this can read: its columns are " + ", ".join(header), path=path,
                              line=1, hint=f"expected {EXPECTED}; a plain list of addresses is no consent: "
                                           "import it with --status STATUS only if that is what they said")
    if status not in PLAIN_STATUSES:
        raise NewsletterError(f"unknown status {status!r}", field="--status",
                              hint="one of " + ", ".join(PLAIN_STATUSES))
    return status


def _read(path: Path, reader, status: str | None = None, erased: Container[str] = ()) -> Imported:
    header = [h.strip().lower() for h in next(reader, [])]
    email_col = next((h for h in header if h in _EMAIL), None)
    if email_col is None:
        raise NewsletterError("no email column", path=path, line=1,
                              hint="expected one of: " + ", ".join(_EMAIL))
    default = _default_status(path, header, status)
    out = Imported()
    for line, values in enumerate(reader, start=2):
        row = dict(zip(header, map(restore, values)))  # a spreadsheet-safe cell gives back its value
        try:
            email = addresses.check((row.get(email_col) or "").strip())
        except ValueError as exc:
            out.skipped.append((line, f"not a valid address: {exc}"))
            continue
        if email in erased:  # `audience erase`: never brought back by an old export
            out.skipped.append((line, REASON))
            continue
        status = _status(row, default)
        if status is None:
            out.skipped.append((line, "status not imported"))
            continue
        reason = " ".join((row.get("unsub_reason") or "").split())[:200] or None
        out.changes.append(Change(email, status, "import", reason=reason, name=_name(row)))
    return out


def import_export(audience: Audience, path: Path, status: str | None = None,
                  start: Callable[[Audience, list[str]], int] | None = None, erased: Container[str] = ()) -> Imported:
    """Read the export and record it in one transaction (all or nothing), noting which changes
    applied: an import never lifts an unsubscribe, so rows read are not changes made. `start`
    (--start-sequence) enrols the rows now subscribed in a sequence, in the same transaction."""
    imported = read_export(path, status, erased)
    with audience.transaction():
        audience.lock(c.email for c in imported.changes)
        imported.applied = [c for c in imported.changes if audience.apply(c)]
        if start is not None:
            wanted = [c.email for c in imported.changes if c.status == "subscribed"]
            now = {e for e, s in audience.db.execute(
                f"SELECT email, status FROM audience WHERE email IN ({audience.db.json_values()})",
                (json.dumps([key(e) for e in wanted]),)) if s == "subscribed"}
            imported.started = start(audience, [e for e in wanted if key(e) in now])
    return imported
