"""What SendGrid tells us beyond an address's status, kept in the audience store's database.

- `blocks`: SendGrid's blocks and `blocked` bounces. Recorded, never suppressing: a block is
  usually the receiving server's temporary refusal (greylisting, an IP reputation hiccup),
  and suppressing it would drop a good reader for good.
- `sendgrid_sync`: per suppression list, the time of its last complete sync: the next one
  asks only for what is newer (`start_time`, inclusive, so nothing at the boundary is lost).
- `sendgrid_events`: webhook `sg_event_id`s already counted: SendGrid retries a batch it got
  no 2xx for, so the same event may come twice. Kept for a week (SendGrid retries for 24 h).
- `issue_events` / `issue_clicks`: per issue, how many of each event and which URLs were clicked.

Every function here runs inside the caller's `Audience.transaction()`; the tables are the audience
store's (migrations.py).
"""

from __future__ import annotations

import time
from typing import Any

from newsletter_mailer.audience import erasure
from newsletter_mailer.audience.store import Audience
from newsletter_mailer.errors import one_line
from newsletter_mailer.ledger import key

SEEN_DAYS = 7
MAX_NOTE = 500


def plausible(email: Any) -> bool:
    """An address SendGrid sent us, good enough to key a status on (it came from our own sends): one
    printable word with an @ (a NUL or a line break is no address of ours, and would reach listings)."""
    return (isinstance(email, str) and 3 <= len(email) <= 320 and "@" in email and email.isprintable()
            and not any(c.isspace() for c in email))


def note(value: Any, limit: int = MAX_NOTE) -> str | None:
    """A reason or status from SendGrid as stored: one line, capped; None unless a non-blank string."""
    return one_line(value)[:limit] if isinstance(value, str) and value.strip() else None


def block(store: Audience, email: str, created: int, source: str, status: str | None, reason: str | None,
          issue: str | None = None) -> bool:
    """One block, once per (address, time); True when it was new. An erased reader's is kept under
    the tombstone key, without its reason (audience/erasure.py)."""
    kept = erasure.stand_in(store.db, key(email))
    if kept is not None:
        email, reason = kept, None
    return store.db.execute("INSERT INTO blocks (email, created, source, issue, status, reason) "
                            "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING", (key(email), created, source, issue, status, reason)).rowcount > 0


def blocks(store: Audience, email: str) -> list[tuple[int, str, str | None]]:
    """(created, status, reason) of one address's blocks, oldest first."""
    return list(store.db.execute("SELECT created, status, reason FROM blocks WHERE email=? ORDER BY created",
                                 (key(email),)))


def since(store: Audience, name: str) -> int | None:
    row = store.db.execute("SELECT since FROM sendgrid_sync WHERE list=?", (name,)).fetchone()
    return row[0] if row else None


def synced(store: Audience, name: str, started: int) -> None:
    store.db.execute("INSERT INTO sendgrid_sync (list, since) VALUES (?,?) ON CONFLICT (list) DO UPDATE "
                     "SET since=excluded.since", (name, started))


def first_time(store: Audience, event_id: str, now: int | None = None) -> bool:
    """Mark a webhook event seen; False when it was seen before (a retry: count nothing)."""
    now = int(time.time()) if now is None else now
    return store.db.execute("INSERT INTO sendgrid_events (id, seen) VALUES (?,?) ON CONFLICT DO NOTHING",
                            (event_id, now)).rowcount > 0


def forget_old(store: Audience, now: int | None = None) -> None:
    now = int(time.time()) if now is None else now
    store.db.execute("DELETE FROM sendgrid_events WHERE seen < ?", (now - SEEN_DAYS * 86400,))


def count(store: Audience, issue: str, event: str, url: str | None = None) -> None:
    store.db.execute("INSERT INTO issue_events (issue, event, n) VALUES (?,?,1) ON CONFLICT (issue, event) "
                     "DO UPDATE SET n=issue_events.n+1", (issue, event))
    if url:
        store.db.execute("INSERT INTO issue_clicks (issue, url, n) VALUES (?,?,1) ON CONFLICT (issue, url) "
                         "DO UPDATE SET n=issue_clicks.n+1", (issue, url))


def counts(store: Audience, issue: str) -> dict[str, int]:
    """{event: n} for one issue, for `newsletter status` and the report."""
    return dict(store.db.execute("SELECT event, n FROM issue_events WHERE issue=?", (issue,)))


def clicks(store: Audience, issue: str) -> list[tuple[str, int]]:
    """(url, clicks) for one issue, most clicked first."""
    return list(store.db.execute("SELECT url, n FROM issue_clicks WHERE issue=? ORDER BY n DESC, url",
                                 (issue,)))
