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
When several status columns disagree the stronger wins (complained > bounced >
unsubscribed > subscribed > pending). Rows without a valid address are skipped, by line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from newsletter_mailer import addresses
from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.errors import NewsletterError, unreadable

_EMAIL = ("email", "email address", "e-mail", "e-mail address", "email_address")
_STATUS_COLUMNS = ("status", "subscription_status", "subscription status")
_MAP = {
    "enabled": "subscribed", "confirmed": "subscribed", "subscribed": "subscribed", "active": "subscribed",
    "unconfirmed": "pending", "pending": "pending",
    "blocklisted": "unsubscribed", "blacklisted": "unsubscribed", "unsubscribed": "unsubscribed",
    "cleaned": "bounced", "bounced": "bounced", "complained": "complained",
}
_RANK = ("pending", "subscribed", "unsubscribed", "bounced", "complained")


@dataclass
class Imported:
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
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


def read_export(path: Path) -> Imported:
    """The changes a CSV export asks for; NewsletterError when it is not such a file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return _read(path, csv.reader(f))
    except OSError as exc:
        raise unreadable(path, exc) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NewsletterError(f"not a UTF-8 CSV file: {exc}", path=path) from None


def _read(path: Path, reader) -> Imported:
    header = [h.strip().lower() for h in next(reader, [])]
    email_col = next((h for h in header if h in _EMAIL), None)
    if email_col is None:
        raise NewsletterError("no email column", path=path, line=1,
                              hint="expected one of: " + ", ".join(_EMAIL))
    default = _file_default(path, set(header))
    out = Imported()
    for line, values in enumerate(reader, start=2):
        row = dict(zip(header, values))
        try:
            email = addresses.check((row.get(email_col) or "").strip())
        except ValueError as exc:
            out.skipped.append((line, f"not a valid address: {exc}"))
            continue
        status = _status(row, default)
        if status is None:
            out.skipped.append((line, "status not imported"))
            continue
        reason = " ".join((row.get("unsub_reason") or "").split())[:200] or None
        out.changes.append(Change(email, status, "import", reason=reason, name=_name(row)))
    return out


def import_export(audience: Audience, path: Path) -> Imported:
    """Read the export and record it in one transaction (all or nothing)."""
    imported = read_export(path)
    audience.record(imported.changes)
    return imported
