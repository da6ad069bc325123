"""`newsletter audience erase`: one reader's data gone from the state, and a tombstone that keeps them gone.

Erasing deletes every audience-store row that holds the address (status, pending sign-up, history,
SendGrid blocks, soft bounces, sequences, [tracking] per_reader clicks and the sign-up form's
per-address rate rows). What `status` and `report` count keeps its row under the address's tombstone
key instead, with no name or reason: the ledger's deliveries and subject-test draws, and an issue's
unsubscribe, bounce and complaint events. The counts stay right; no address remains. The tombstone (table `erased`) is a keyed hash of the address under the newsletter secret
(tombstone()): a send, an import or a listing that meets the address again on an old list
skips it ("erased on request"), and a send of an issue already delivered to it finds that
delivery under the same key. The hash's key is random, made by the first erasure and kept in the
store (`erasure_key`): it is never rotated with the newsletter secret, so a tombstone holds for as
long as the state does, and erasing needs no secret. Only a confirmed sign-up (new, explicit consent) lifts the tombstone.

Each database commits on its own (on SQLite they are two files): the store first, then the ledger.
An erase cut short in between is completed by running it again; it is idempotent.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

from newsletter_mailer.addresses import mailbox_keys
from newsletter_mailer.ledger import key

REASON = "erased on request"
TOMBSTONE = "erased:"  # a ledger row's address becomes this and the address's keyed hash
# The audience store's tables keyed by the address, and what each holds (for the command's lines).
STORE_TABLES = {"audience": "status", "history": "history", "blocks": "SendGrid blocks",
                "soft_bounces": "soft bounces", "sequence_readers": "sequences", "reader_clicks": "clicks"}
LEDGER_TABLES = {"deliveries": "deliveries", "ab_variants": "subject-test draws"}
_COUNTED = "issue IS NOT NULL AND status IN ('unsubscribed', 'bounced', 'complained')"


@dataclass
class Found:
    """What the state holds for one address: rows per table ('rate' the sign-up form's counters)."""

    email: str
    rows: dict[str, int] = field(default_factory=dict)
    tombstoned: bool = False  # erased before (rows found now came back since, e.g. a bounce report)

    def describe(self) -> str:
        names = {**STORE_TABLES, **LEDGER_TABLES, "rate": "sign-up limits"}
        parts = [f"{names[t]} {n}" for t, n in self.rows.items() if n]
        return ", ".join(parts)


def tombstone(key: bytes, email: str) -> str:
    """The tombstone of an erased address: a keyed hash, so the store can tell the address again
    when an old list brings it back, yet holds nothing that names it."""
    return hmac.digest(key, b"erased\0" + email.lower().encode("utf-8"), "sha256")[:16].hex()


def tombstone_key(db, *, create: bool) -> bytes | None:
    """The store's tombstone key (32 random bytes, made once, inside the caller's transaction when
    create); None when no erasure has made one yet."""
    row = db.execute("SELECT key FROM erasure_key WHERE id=1").fetchone()
    if row is None and create:
        db.execute("INSERT INTO erasure_key (id, key) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                   (os.urandom(32).hex(),))
        row = db.execute("SELECT key FROM erasure_key WHERE id=1").fetchone()
    return bytes.fromhex(row[0]) if row else None


def stand_in(db, email: str) -> str | None:
    """TOMBSTONE + the address's hash when the address was erased, else None: what arrives later for
    an erased reader (a bounce, a complaint, an unsubscribe from an old message, a click) is counted
    under that key and never brings the address back. Two point queries; one when nothing was erased.
    A tombstone key (a bounce tied by Message-ID to a delivery from before the erasure) stands for itself."""
    if email.startswith(TOMBSTONE):
        return email
    k = tombstone_key(db, create=False)
    if k is None:
        return None
    tomb = tombstone(k, email)
    return TOMBSTONE + tomb if db.execute("SELECT 1 FROM erased WHERE hash=?", (tomb,)).fetchone() else None


class Erased:
    """The store's tombstones, read once: `email in erased` for the addresses `audience erase` removed."""

    def __init__(self, store):
        db = store.db if store is not None else None
        self.hashes = {r[0] for r in db.execute("SELECT hash FROM erased")} if db is not None else set()
        self.key = tombstone_key(db, create=False) if self.hashes else None

    def of(self, email: str) -> str | None:
        """The address's tombstone when there are tombstones to compare with, else None."""
        return tombstone(self.key, email) if self.key is not None else None

    def __contains__(self, email: str) -> bool:
        return self.key is not None and tombstone(self.key, email) in self.hashes

    def fresh(self, store) -> Erased:
        """These tombstones, or read again when their number changed (an erase while a send runs:
        one count a batch; erasing deletes rows, so the store's change mark does not see it)."""
        n = store.db.execute("SELECT count(*) FROM erased").fetchone()[0]
        return self if n == len(self.hashes) else Erased(store)


class LedgerStates(dict):
    """ledger.states(issue) that also finds a delivery recorded before its reader was erased (under the
    tombstone key) by the address: a reader who signed up again never gets that issue twice. Hashes
    only for an issue that has such rows."""

    def __init__(self, states: dict, erased: Erased):
        super().__init__(states)
        self.erased = erased if any(k.startswith(TOMBSTONE) for k in states) else None

    def get(self, email_key, default=None):
        found = super().get(email_key)
        if found is None and self.erased is not None:
            tomb = self.erased.of(email_key)
            found = super().get(TOMBSTONE + tomb) if tomb is not None else None
        return default if found is None else found


def survey(store, ledger, email: str) -> Found:
    """What erasing the address would remove (also `--dry-run`'s answer)."""
    email = key(email)
    found = Found(email)
    for table in STORE_TABLES:
        found.rows[table] = store.db.execute(f"SELECT count(*) FROM {table} WHERE email=?", (email,)).fetchone()[0]
    found.rows["rate"] = store.db.execute(
        f"SELECT count(*) FROM rate WHERE bucket IN ({store.db.json_values()})",
        (_json([f"address:{k}" for k in mailbox_keys(email)]),)).fetchone()[0]
    for table in LEDGER_TABLES:
        found.rows[table] = ledger.db.execute(f"SELECT count(*) FROM {table} WHERE email=?",
                                              (email,)).fetchone()[0] if ledger is not None else 0
    found.tombstoned = email in Erased(store)
    return found


def erase(store, ledger, email: str, *, ledger_too: bool = True) -> Found:
    """Every row of the address deleted from the store, or (the events per-issue counts are made of)
    kept under the tombstone key with no name or reason; with its tombstone, in one transaction. Then
    its ledger rows rewritten to the tombstone key (another; ledger_too=False leaves that to
    erase_ledger). Returns what was there."""
    email = key(email)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with store.transaction():
        store.lock([email])
        found = survey(store, ledger, email)
        db = store.db
        tomb = tombstone(tombstone_key(db, create=True), email)
        for table in ("audience", "sequence_readers", "reader_clicks"):
            db.execute(f"DELETE FROM {table} WHERE email=?", (email,))
        db.execute(f"DELETE FROM rate WHERE bucket IN ({db.json_values()})",
                   (_json([f"address:{k}" for k in mailbox_keys(email)]),))
        # `status` and `report` count an issue's unsubscribes, bounces and complaints from these
        db.execute(f"DELETE FROM history WHERE email=? AND NOT ({_COUNTED})", (email,))
        db.execute("UPDATE history SET email=?, name=NULL, reason=NULL WHERE email=?", (TOMBSTONE + tomb, email))
        db.execute("DELETE FROM blocks WHERE email=? AND issue IS NULL", (email,))
        for table, column in (("blocks", "created"), ("soft_bounces", "issue")):
            db.execute(f"DELETE FROM {table} WHERE email=? AND {column} IN (SELECT {column} FROM {table} "
                       "WHERE email=?)", (TOMBSTONE + tomb, email))
            db.execute(f"UPDATE {table} SET email=?, reason=NULL WHERE email=?", (TOMBSTONE + tomb, email))
        db.execute("INSERT INTO erased (hash, at) VALUES (?,?) ON CONFLICT (hash) DO NOTHING", (tomb, now))
    if ledger is not None and ledger_too:
        _rewrite(ledger.db, email, TOMBSTONE + tomb)
    return found


def erase_ledger(store, ledger, email: str) -> None:
    """The address's ledger rows under its tombstone key (the store's part done first, by erase). Run
    while no send holds its lock (`audience erase` takes them all): a batch between its 'sending' and
    its outcome would otherwise record the outcome under the address again."""
    k = tombstone_key(store.db, create=False)
    if ledger is not None and k is not None:
        _rewrite(ledger.db, key(email), TOMBSTONE + tombstone(k, key(email)))


def _rewrite(db, email: str, tomb: str) -> None:
    """The address's ledger rows under the tombstone key, any mention of it in a reason scrubbed; a
    row already there for the same issue (an earlier erase) gives way to the newer one."""
    quoted = re.compile(re.escape(email), re.IGNORECASE)
    with db.transaction():
        for table in LEDGER_TABLES:
            db.execute(f"DELETE FROM {table} WHERE email=? AND issue IN (SELECT issue FROM {table} WHERE email=?)",
                       (tomb, email))
            db.execute(f"UPDATE {table} SET email=? WHERE email=?", (tomb, email))
        for issue, reason in db.execute("SELECT issue, reason FROM deliveries WHERE email=? AND reason IS NOT NULL",
                                        (tomb,)).fetchall():
            if quoted.search(reason):
                db.execute("UPDATE deliveries SET reason=? WHERE issue=? AND email=?",
                           (quoted.sub("[erased]", reason), issue, tomb))


def lift(store, email: str) -> None:
    """A confirmed sign-up (new, explicit consent): the address's tombstone goes, inside the caller's
    transaction. Its old ledger rows keep the tombstone key; LedgerStates still finds them."""
    k = tombstone_key(store.db, create=False)
    if k is not None:
        store.db.execute("DELETE FROM erased WHERE hash=?", (tombstone(k, email),))


def _json(values: Iterable[str]) -> str:
    import json

    return json.dumps(list(values))
