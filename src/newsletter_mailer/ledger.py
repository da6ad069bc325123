"""The send ledger: a SQLite file or PostgreSQL tables (db.py) recording, per issue and recipient, what happened.

A recipient's row is written before the attempt ('sending') and after it ('sent',
'failed'), each in its own committed transaction, so after a crash or a kill a
resumed send knows exactly who was mailed and who was in flight. In-flight rows
found at start-up become 'uncertain' and are held back until --resend-uncertain.
SQLite in WAL with synchronous=NORMAL survives a killed process (the OS has the pages);
PostgreSQL has it once COMMIT returns.
A scheduled send (`send --at`) leaves its rows 'scheduled' with the provider's batch id,
one `schedules` row per batch with its time; `cancel` turns them 'cancelled'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

from newsletter_mailer.state import migrations
from newsletter_mailer.state.db import Database
from newsletter_mailer.state.handle import LEDGER_FILE as FILE  # noqa: F401 - where it is on SQLite

# Databases written by earlier versions also allow a 'queued' status in the CHECK; no row has it.
STATUSES = ("sending", "sent", "failed", "uncertain", "scheduled", "cancelled")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def upgrade_sqlite(db: Database) -> None:
    """A SQLite ledger from before scheduling: its status CHECK lacks 'scheduled' and 'cancelled'
    (SQLite cannot alter a CHECK) and it has no batch_id column, so the table is rebuilt with
    every row copied, in one transaction: a crash leaves the old table whole."""
    with db.transaction():
        found = db.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='deliveries'").fetchone()
        if found is not None and "'scheduled'" not in found[0]:
            columns = ", ".join(r[1] for r in db.execute("PRAGMA table_info(deliveries)") if r[1] != "batch_id")
            db.execute(migrations.DELIVERIES.format(name="deliveries_new"))
            db.execute(f"INSERT INTO deliveries_new ({columns}) SELECT {columns} FROM deliveries")
            db.execute("DROP TABLE deliveries")
            db.execute("ALTER TABLE deliveries_new RENAME TO deliveries")


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
    """The ledger over an opened, migrated database: made only by `State.ledger()` (state/handle.py)."""

    def __init__(self, db: Database):
        self.db = db

    def close(self) -> None:
        self.db.close()

    def message_ids(self) -> Iterator[tuple[str, str, str]]:
        """(Message-ID, issue, email) of every row that has one: the inbox ties reports to our mail."""
        yield from self.db.execute(
            "SELECT message_id, issue, email FROM deliveries WHERE message_id IS NOT NULL")

    def _tx(self, sql: str, rows: Iterable[tuple]) -> None:
        with self.db.transaction():
            self.db.executemany(sql, rows)

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

    def states_among(self, issue: str, emails: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """`states` for some recipients only (a sequence step's due readers): one query."""
        return {e: (s, bool(p)) for e, s, p in self.db.execute(
            f"SELECT email, status, permanent FROM deliveries WHERE issue=? AND email IN ({self.db.json_values()})",
            (issue, json.dumps([key(e) for e in emails])))}

    def begin(self, issue: str, emails: Iterable[str], provider: str,
              message_ids: Iterable[str | None] | None = None, batch_id: str | None = None,
              variant: str | None = None) -> None:
        """Written and committed before the attempt: a crash from here on leaves them uncertain.
        message_ids (when the provider chooses them before sending) let an uncertain row be
        found in the server's log by Message-ID, not only by address; batch_id (a scheduled
        send) lets `cancel` stop even a request whose answer never came; variant names the sections
        the batch's readers get (variants.py)."""
        now = _now()
        emails = list(emails)
        ids = list(message_ids) if message_ids is not None else [None] * len(emails)
        if self.db.postgres_backend:
            self._begin_pg(issue, emails, ids, provider, now, batch_id, variant)
            return
        self._tx("INSERT INTO deliveries (issue, email, status, provider, message_id, attempts, updated_at, "
                 "batch_id, variant) VALUES (?,?,'sending',?,?,1,?,?,?) ON CONFLICT (issue, email) DO UPDATE SET "
                 "status='sending', provider=excluded.provider, message_id=excluded.message_id, "
                 "attempts=deliveries.attempts+1, reason=NULL, updated_at=excluded.updated_at, "
                 "batch_id=excluded.batch_id, variant=excluded.variant",
                 ((issue, key(e), provider, m, now, batch_id, variant) for e, m in zip(emails, ids, strict=True)))

    def _begin_pg(self, issue: str, emails: list[str], ids: list[str | None], provider: str, now: str,
                  batch_id: str | None, variant: str | None) -> None:
        """`begin` as one statement for the batch (a row a statement costs a round trip's worth
        each on PostgreSQL); an address twice in a batch (a plan sends it once) is one row, its last id."""
        last = dict(zip((key(e) for e in emails), ids, strict=True))
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO deliveries (issue, email, status, provider, message_id, attempts, updated_at, batch_id, "
                "variant) SELECT ?, u.email, 'sending', ?, u.message_id, 1, ?, ?, ? FROM unnest(?::text[], ?::text[]) "
                "AS u(email, message_id) ON CONFLICT (issue, email) DO UPDATE SET status='sending', "
                "provider=excluded.provider, message_id=excluded.message_id, attempts=deliveries.attempts+1, "
                "reason=NULL, updated_at=excluded.updated_at, batch_id=excluded.batch_id, variant=excluded.variant",
                (issue, provider, now, batch_id, variant, list(last), list(last.values())))

    def finish(self, issue: str, results: Iterable, *, scheduled: bool = False) -> None:
        """Record each provider Outcome: sent (with the provider's id; 'scheduled' when the provider
        holds it until a time), failed (with why) or uncertain (keeping the id recorded with
        'sending': the one to look for in the server's log)."""
        now = _now()
        ok = "scheduled" if scheduled else "sent"
        rows = []
        for r in results:
            status = ok if r.ok else "uncertain" if r.uncertain else "failed"
            rows.append((status, r.message_id, status, r.error, int(bool(r.permanent)), now, issue, key(r.email)))
        if self.db.postgres_backend:
            self._finish_pg(issue, rows, now)
            return
        self._tx("UPDATE deliveries SET status=?, message_id=COALESCE(?, CASE WHEN ?='uncertain' THEN message_id END), "
                 "reason=?, permanent=?, updated_at=? WHERE issue=? AND email=?", rows)

    def _finish_pg(self, issue: str, rows: list[tuple], now: str) -> None:
        """`finish` as one UPDATE for the batch; an address twice gets its last outcome, as before."""
        last = {r[-1]: r for r in rows}
        if not last:
            return
        status, message_id, _, reason, permanent, *_ = (list(c) for c in zip(*last.values()))
        with self.db.transaction():
            self.db.execute(
                "UPDATE deliveries AS d SET status=u.status, message_id=COALESCE(u.message_id, CASE WHEN "
                "u.status='uncertain' THEN d.message_id END), reason=u.reason, permanent=u.permanent, updated_at=? "
                "FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::bigint[]) "
                "AS u(email, status, message_id, reason, permanent) WHERE d.issue=? AND d.email=u.email",
                (now, list(last), status, message_id, reason, permanent, issue))

    def counts(self, issue: str) -> dict[str, int]:
        """Rows per status; in-flight ('sending') rows count as uncertain, as a resumed send
        would find them."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute(
                "SELECT status, count(*) FROM deliveries WHERE issue=? GROUP BY status", (issue,)):
            out[status] = n
        out["uncertain"] += out.pop("sending")
        return out

    def variants(self, issue: str) -> dict[str, dict[str, int]]:
        """Rows per variant and status (an issue with for: conditions; {} for one without)."""
        out: dict[str, dict[str, int]] = {}
        for variant, status, n in self.db.execute(
                "SELECT variant, status, count(*) FROM deliveries WHERE issue=? AND variant IS NOT NULL "
                "GROUP BY variant, status ORDER BY variant", (issue,)):
            counts = out.setdefault(variant, dict.fromkeys(STATUSES, 0))
            counts[status] = n
        for counts in out.values():
            counts["uncertain"] += counts.pop("sending")
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

    # --- scheduled sends -------------------------------------------------------------------

    def add_schedule(self, issue: str, batch_id: str, send_at: int, zone: str | None) -> None:
        """Recorded before the first request that uses the batch: cancel can always find it.
        zone: the IANA zone the time was given in, to show it back the same way."""
        self._tx("INSERT INTO schedules (batch_id, issue, send_at, zone, created_at) VALUES (?,?,?,?,?)",
                 [(batch_id, issue, send_at, zone, _now())])

    def schedules(self, issue: str) -> list[tuple[str, int, int, str | None]]:
        """(batch id, send_at, rows still 'scheduled', zone) of the issue's batches, earliest first."""
        return list(self.db.execute(
            "SELECT s.batch_id, s.send_at, (SELECT count(*) FROM deliveries d WHERE d.issue=s.issue AND "
            "d.batch_id=s.batch_id AND d.status='scheduled'), s.zone FROM schedules s WHERE s.issue=? "
            "ORDER BY s.send_at, s.created_at", (issue,)))

    def cancel(self, issue: str, batch_id: str) -> int:
        """The batch's rows as 'cancelled' (uncertain ones too: the cancelled batch delivers none)."""
        with self.db.transaction():
            return self.db.execute(
                "UPDATE deliveries SET status='cancelled', reason='scheduled send cancelled', updated_at=? "
                "WHERE issue=? AND batch_id=? AND status IN ('scheduled', 'uncertain', 'sending')",
                (_now(), issue, batch_id)).rowcount
