"""The send ledger: a SQLite database recording, per issue and recipient, what happened.

A recipient's row is written before the attempt ('sending') and after it ('sent',
'failed'), each in its own committed transaction, so after a crash or a kill a
resumed send knows exactly who was mailed and who was in flight. In-flight rows
found at start-up become 'uncertain' and are held back until --resend-uncertain.
WAL with synchronous=NORMAL survives a killed process (the OS has the pages).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from newsletter_mailer.errors import NewsletterError

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    issue       TEXT NOT NULL,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed', 'uncertain')),
    provider    TEXT,
    message_id  TEXT,
    reason      TEXT,
    permanent   INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (issue, email)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (issue, status);
"""

# Databases written by earlier versions also allow a 'queued' status in the CHECK; no row has it.
STATUSES = ("sending", "sent", "failed", "uncertain")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def key(email: str) -> str:
    """Addresses are compared case-insensitively: the same address twice is sent once."""
    return email.lower()


@dataclass(frozen=True)
class Row:
    email: str
    status: str
    provider: str | None
    message_id: str | None
    reason: str | None
    permanent: bool
    attempts: int
    updated_at: str


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path.is_symlink():  # SQLite would follow it: the ledger must be where it is said to be
                raise NewsletterError("the send ledger is a link", path=path, hint="remove the link")
            try:
                # Created readable by the user only (it lists every subscriber's address), exclusively.
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise NewsletterError(f"cannot open the send ledger: {exc}", path=path,
                                  hint="check the --state folder") from None

    @classmethod
    def in_state(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / "ledger.sqlite3")

    def close(self) -> None:
        self.db.close()

    def _tx(self, sql: str, rows: Iterable[tuple]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(sql, rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def mark_in_flight_uncertain(self, issue: str) -> list[str]:
        """Rows left 'sending' by a killed run: their delivery is unknown. Returns them."""
        rows = [r[0] for r in self.db.execute(
            "SELECT email FROM deliveries WHERE issue=? AND status='sending' ORDER BY email", (issue,))]
        if rows:
            self._tx("UPDATE deliveries SET status='uncertain', reason='the send was interrupted during this "
                     "attempt', updated_at=? WHERE issue=? AND status='sending'", [(_now(), issue)])
        return rows

    def states(self, issue: str) -> dict[str, tuple[str, bool]]:
        """email key -> (status, permanent) for every recipient of the issue that has a row."""
        return {e: (s, bool(p)) for e, s, p in self.db.execute(
            "SELECT email, status, permanent FROM deliveries WHERE issue=?", (issue,))}

    def begin(self, issue: str, emails: Iterable[str], provider: str,
              message_ids: Iterable[str | None] | None = None) -> None:
        """Written and committed before the attempt: a crash from here on leaves them uncertain.
        message_ids (when the provider chooses them before sending) let an uncertain row be
        found in the server's log by Message-ID, not only by address."""
        now = _now()
        emails = list(emails)
        ids = list(message_ids) if message_ids is not None else [None] * len(emails)
        self._tx("INSERT INTO deliveries (issue, email, status, provider, message_id, attempts, updated_at) "
                 "VALUES (?,?,'sending',?,?,1,?) ON CONFLICT (issue, email) DO UPDATE SET status='sending', "
                 "provider=excluded.provider, message_id=excluded.message_id, attempts=attempts+1, reason=NULL, "
                 "updated_at=excluded.updated_at",
                 ((issue, key(e), provider, m, now) for e, m in zip(emails, ids, strict=True)))

    def finish(self, issue: str, results: Iterable) -> None:
        """Record each provider Outcome: sent (with the provider's id), failed (with why) or uncertain
        (keeping the id recorded with 'sending': the one to look for in the server's log)."""
        now = _now()
        rows = []
        for r in results:
            status = "sent" if r.ok else "uncertain" if r.uncertain else "failed"
            rows.append((status, r.message_id, status, r.error, int(bool(r.permanent)), now, issue, key(r.email)))
        self._tx("UPDATE deliveries SET status=?, message_id=COALESCE(?, CASE WHEN ?='uncertain' THEN message_id END), "
                 "reason=?, permanent=?, updated_at=? WHERE issue=? AND email=?", rows)

    def counts(self, issue: str) -> dict[str, int]:
        """Rows per status; in-flight ('sending') rows count as uncertain, as a resumed send
        would find them."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute(
                "SELECT status, count(*) FROM deliveries WHERE issue=? GROUP BY status", (issue,)):
            out[status] = n
        out["uncertain"] += out.pop("sending")
        return out

    def rows(self, issue: str, status: str | None = None) -> Iterator[Row]:
        sql = ("SELECT email, status, provider, message_id, reason, permanent, attempts, updated_at "
               "FROM deliveries WHERE issue=?")
        args: tuple = (issue,)
        if status:
            sql += " AND status=?"
            args += (status,)
        for r in self.db.execute(sql + " ORDER BY email", args):
            yield Row(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7])
