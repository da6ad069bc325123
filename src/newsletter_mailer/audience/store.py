"""The audience store: what readers told us (sign-ups, unsubscribes, bounces, complaints).

SQLite beside the send ledger (`audience.sqlite3` in the state folder; or PostgreSQL, db.py), WAL with
synchronous=NORMAL like the ledger: a change survives a killed process once its
transaction commits, and every change commits before anyone is told it happened (the
web app answers after `record` returns). One row per address holds the current status;
`history` keeps every event, applied or not, so an address can leave and come back.

Precedence, so that nothing but the reader can undo what the reader asked for:
- `unsubscribed`, `bounced`, `complained` always apply, except that `unsubscribed`
  does not replace the stronger `bounced` or `complained`, nor an earlier `unsubscribed`
  (a mail program's one-click after the page's button changes nothing: the first source stays);
- `pending` (a sign-up not yet confirmed) applies only to an unknown or pending address;
- `subscribed` from a confirmed sign-up (source `form`) re-subscribes an `unsubscribed`
  reader; from any other source it never overrides a suppression;
- only `unsuppress` (an operator's decision) clears `bounced` or `complained`.
"""

from __future__ import annotations

import json
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator


from newsletter_mailer.audience import erasure
from newsletter_mailer.state.db import Database
from newsletter_mailer.state.handle import AUDIENCE_FILE as FILE  # noqa: F401 - where it is on SQLite
from newsletter_mailer.ledger import key
from newsletter_mailer.state.migrations import AUDIENCE_STATUSES

STATUSES = AUDIENCE_STATUSES
SUPPRESSED = ("unsubscribed", "bounced", "complained")
SOURCES = ("link", "one-click", "form", "cli", "import", "sendgrid", "mailbox")
_STRONG = ("bounced", "complained")
_SQL_SUPPRESSED = "('unsubscribed', 'bounced', 'complained')"
# PostgreSQL: writers of the same address take turns on an advisory lock of its bucket (a hash of the
# address), so writers of different addresses run side by side; bounded, so that a large import takes
# at most this many locks and cannot fill the server's lock table.
LOCK_SPACE = 0x4E4C  # the first key of the store's two-integer advisory locks
LOCK_BUCKETS = 256

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Entry:
    email: str
    status: str
    source: str
    issue: str | None
    reason: str | None
    name: str | None
    updated_at: str


@dataclass(frozen=True)
class Change:
    """One thing a reader (or the operator, or an import) told us about an address."""

    email: str
    status: str
    source: str
    issue: str | None = None
    reason: str | None = None
    name: str | None = None


def applies(current: str | None, change: Change) -> bool:
    """Whether change replaces the current status (the precedence in the module docstring)."""
    new = change.status
    if new in _STRONG:
        return True
    if new == "unsubscribed":
        return current not in SUPPRESSED
    if new == "pending":
        return current in (None, "pending")
    if current in _STRONG:
        return False
    return current != "unsubscribed" or change.source == "form"


class Audience:
    """The store over an opened, migrated database: made only by `State.audience()` (state/handle.py),
    or over a pool's connection (state/pool.py)."""

    def __init__(self, db: Database):
        self.db = db

    def close(self) -> None:
        self.db.close()

    def record(self, changes: Iterable[Change]) -> int:
        """Apply changes in one committed transaction; returns how many changed a status."""
        now, changes = _now(), list(changes)
        with self.transaction():
            self.lock(c.email for c in changes)
            return sum(self._apply(c, now) for c in changes)

    def lock(self, emails: Iterable[str]) -> None:
        """Inside a transaction, before changing several addresses: their locks, all at once in
        order (one by one, in each caller's order, two such transactions could deadlock)."""
        self.db.lock_each(LOCK_SPACE, (zlib.crc32(key(e).encode()) % LOCK_BUCKETS for e in emails))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT: writes that stand or fall together (a webhook's seen ids and
        the changes they carried), rolled back on any error."""
        with self.db.transaction():
            yield

    def apply(self, c: Change, now: str | None = None) -> bool:
        """One change inside an open transaction: always into history, into the status if it applies."""
        self.lock([c.email])  # the second writer of an address reads the first's status
        return self._apply(c, now or _now())

    def _apply(self, c: Change, now: str) -> bool:
        """`apply` with the address's lock already held."""
        if c.status not in STATUSES or c.source not in SOURCES:
            raise ValueError(f"unknown status or source: {c.status!r}, {c.source!r}")
        email = key(c.email)
        if c.source != "form" and (kept := erasure.stand_in(self.db, email)) is not None:
            # an erased reader: an event about an issue counts under the tombstone key (as `erase` left
            # the earlier ones), and no status row brings the address back. Only their own sign-up may.
            if c.issue and c.status in SUPPRESSED:
                self.db.execute("INSERT INTO history (email, status, source, issue, reason, name, applied, at) "
                                "VALUES (?,?,?,?,NULL,NULL,0,?)", (kept, c.status, c.source, c.issue, now))
            return False
        row = self.db.execute("SELECT status FROM audience WHERE email=?", (email,)).fetchone()
        ok = applies(row[0] if row else None, c)
        self.db.execute("INSERT INTO history (email, status, source, issue, reason, name, applied, at) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (email, c.status, c.source, c.issue, c.reason, c.name, int(ok), now))
        if ok:
            self._set(email, c, now)
        return ok

    def _set(self, email: str, c: Change, now: str) -> None:
        self.db.execute(
            "INSERT INTO audience (email, status, source, issue, reason, name, updated_at) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (email) DO UPDATE SET status=excluded.status, source=excluded.source, "
            "issue=excluded.issue, reason=excluded.reason, name=coalesce(excluded.name, audience.name), "
            "updated_at=excluded.updated_at", (email, c.status, c.source, c.issue, c.reason, c.name, now))

    def unsuppress(self, emails: Iterable[str], source: str = "cli") -> int:
        """The operator's override: forget the current status (history keeps it); returns how many."""
        now, n, emails = _now(), 0, list(emails)
        with self.transaction():
            self.lock(emails)
            for e in emails:
                email = key(e)
                n += self.db.execute(f"DELETE FROM audience WHERE email=? AND status IN {_SQL_SUPPRESSED}",
                                     (email,)).rowcount
                self.db.execute("INSERT INTO history (email, status, source, reason, applied, at) "
                                "VALUES (?, 'unsuppressed', ?, NULL, 1, ?)", (email, source, now))
        return n

    def status(self, email: str) -> Entry | None:
        row = self.db.execute("SELECT email, status, source, issue, reason, name, updated_at FROM audience "
                              "WHERE email=?", (key(email),)).fetchone()
        return Entry(*row) if row else None

    def change_mark(self) -> int | None:
        """On SQLite, the newest history id: every change writes history, and one writer at a time
        assigns ids in commit order, so an unchanged mark means nothing changed. None on
        PostgreSQL, where concurrent writers may commit ids out of order: ask every time."""
        if self.db.postgres_backend:
            return None
        return self.db.execute("SELECT max(id) FROM history").fetchone()[0] or 0

    def suppressed_among(self, emails: Iterable[str]) -> dict[str, str]:
        """{email key: status} for the suppressed ones among a send batch: one query per batch."""
        keys = json.dumps([key(e) for e in emails])
        return dict(self.db.execute(
            f"SELECT email, status FROM audience WHERE email IN ({self.db.json_values()}) "
            f"AND status IN {_SQL_SUPPRESSED}", (keys,)))

    def suppressed(self) -> dict[str, str]:
        """Every suppressed address with its status, for a send's plan."""
        return dict(self.db.execute(f"SELECT email, status FROM audience WHERE status IN {_SQL_SUPPRESSED}"))

    def signups(self) -> list[tuple[str, str | None]]:
        """(email, name) of everyone subscribed here (confirmed sign-ups, imports, the operator)."""
        return list(self.db.execute("SELECT email, name FROM audience WHERE status='subscribed' ORDER BY email"))

    def rows(self, status: str | None = None) -> Iterator[Entry]:
        sql = "SELECT email, status, source, issue, reason, name, updated_at FROM audience"
        args: tuple = ()
        if status:
            sql, args = sql + " WHERE status=?", (status,)
        for r in self.db.execute(sql + " ORDER BY email", args):
            yield Entry(*r)

    def history(self, email: str) -> list[tuple[str, str, int, str]]:
        """(status, source, applied, at) of every event for one address, oldest first."""
        return list(self.db.execute("SELECT status, source, applied, at FROM history WHERE email=? ORDER BY id",
                                    (key(email),)))

    def hit(self, bucket: str, limit: int, window_seconds: int = 3600, now: int | None = None) -> bool:
        """Count one use of a rate-limited bucket (shared by every worker); False once over limit."""
        with self.transaction():
            return self.count_hit(bucket, limit, window_seconds, now)

    def count_hit(self, bucket: str, limit: int, window_seconds: int = 3600, now: int | None = None) -> bool:
        """`hit` inside the caller's transaction (several buckets counted together); a bucket's
        count starts again in a new window, and `forget_rates` drops the ended ones."""
        window = (int(time.time()) if now is None else now) // window_seconds
        hits = self.db.execute(
            "INSERT INTO rate (bucket, win, hits) VALUES (?,?,1) ON CONFLICT (bucket) DO UPDATE SET "
            "hits=CASE WHEN rate.win=excluded.win THEN rate.hits+1 ELSE 1 END, win=excluded.win "
            "RETURNING hits", (bucket, window)).fetchone()[0]
        return hits <= limit

    def forget_rates(self, window_seconds: int = 3600, now: int | None = None) -> None:
        """Drop the counts of windows that have ended (inside the caller's transaction)."""
        window = (int(time.time()) if now is None else now) // window_seconds
        self.db.execute("DELETE FROM rate WHERE win < ?", (window,))

    def purge_pending(self, before: datetime) -> int:
        """Sign-ups never confirmed, last asked for before `before`, forgotten (their row and their
        `pending` history, which may hold a name a stranger typed); inside the caller's
        transaction; returns how many addresses."""
        cutoff = before.astimezone(timezone.utc).isoformat(timespec="seconds")
        gone = [r[0] for r in self.db.execute(
            "DELETE FROM audience WHERE status='pending' AND updated_at < ? RETURNING email", (cutoff,))]
        if gone:
            self.db.execute(f"DELETE FROM history WHERE status='pending' AND email IN ({self.db.json_values()})",
                            (json.dumps(gone),))
        return len(gone)

    def soft_bounces(self, items: Iterable[tuple[str, str | None, str | None]], limit: int) -> list[Change]:
        """Count temporary failures (email, issue, reason), one per address and issue (an unknown
        issue counts as one); returns the `bounced` changes for addresses now at the limit, which
        the caller records. Counting twice is harmless: the key makes it idempotent."""
        now, reached = _now(), []
        with self.transaction():
            for email, issue, reason in items:
                email = key(email)
                kept = erasure.stand_in(self.db, email)  # an erased reader: counted, the address not kept
                if kept is not None:
                    self.db.execute("INSERT INTO soft_bounces (email, issue, reason, at) VALUES (?,?,NULL,?) "
                                    "ON CONFLICT DO NOTHING", (kept, issue or "", now))
                    continue
                self.db.execute("INSERT INTO soft_bounces (email, issue, reason, at) VALUES (?,?,?,?) "
                                "ON CONFLICT DO NOTHING", (email, issue or "", reason, now))
                n = self.db.execute("SELECT count(*) FROM soft_bounces WHERE email=?", (email,)).fetchone()[0]
                if n >= limit:
                    reached.append(Change(email, "bounced", "mailbox", issue,
                                          f"{n} temporary failures on different issues; last: {reason}"))
        return reached

    def soft_bounce_count(self, email: str) -> int:
        return self.db.execute("SELECT count(*) FROM soft_bounces WHERE email=?", (key(email),)).fetchone()[0]

    def processed(self, digests: Iterable[str]) -> set[str]:
        """Which of these messages (by digest) an earlier `newsletter inbox` already recorded."""
        return {r[0] for r in self.db.execute(
            f"SELECT digest FROM processed WHERE digest IN ({self.db.json_values()})",
            (json.dumps(list(digests)),))}

    def mark_processed(self, digests: Iterable[str]) -> None:
        now = _now()
        with self.transaction():
            self.db.executemany("INSERT INTO processed (digest, at) VALUES (?,?) ON CONFLICT DO NOTHING",
                                ((d, now) for d in digests))

    def counts_for_issue(self, slug: str) -> dict[str, int]:
        """Addresses that bounced, complained or unsubscribed from this issue (applied events), and
        the temporary failures counted: for `newsletter status ISSUE`."""
        out = dict.fromkeys(("bounced", "complained", "unsubscribed"), 0)
        for status, n in self.db.execute(
                "SELECT status, count(DISTINCT email) FROM history WHERE issue=? AND applied=1 "
                "AND status IN ('bounced', 'complained', 'unsubscribed') GROUP BY status", (slug,)):
            out[status] = n
        out["soft_bounces"] = self.db.execute("SELECT count(*) FROM soft_bounces WHERE issue=?",
                                              (slug,)).fetchone()[0]
        return out
