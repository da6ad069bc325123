"""`newsletter audience erase`: one reader's data gone from the state, and a tombstone that keeps them gone.

Erasing deletes every audience-store row that holds the address (status, pending sign-up, history,
SendGrid blocks, soft bounces, sequences, [tracking] per_reader clicks and the sign-up form's
per-address rate rows). What `status` and `report` count keeps its row under the address's tombstone
key instead, with no name or reason: the ledger's deliveries and subject-test draws, and an issue's
unsubscribe, bounce and complaint events. The counts stay right; no address remains. The tombstone (table `erased`) is a keyed hash of the address under the newsletter secret
(tokens.erased_key): a send, an import or a listing that meets the address again on an old list
skips it ("erased on request"), and a send of an issue already delivered to it finds that
delivery under the same key. Only a confirmed sign-up (new, explicit consent) lifts the tombstone.

Each database commits on its own (on SQLite they are two files): the store first, then the ledger.
An erase cut short in between is completed by running it again; it is idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Callable, Iterable, Sequence

from newsletter_mailer import tokens
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


def tombstones(secrets: tokens.Secrets, email: str) -> list[str]:
    """The address's tombstone under each readable secret (a rotation keeps the old one readable)."""
    return [tokens.erased_key(s, key(email)) for s in ((secrets,) if isinstance(secrets, bytes) else secrets)]


class Erased:
    """The store's tombstones, read once: `email in erased`. The secrets are loaded (a callable) only
    when there is something to hash: a state with no erasure never needs, nor makes, a secret file."""

    def __init__(self, store, secrets: Callable[[], Sequence[bytes]] | Sequence[bytes]):
        self._secrets = secrets
        self.hashes = {r[0] for r in store.db.execute("SELECT hash FROM erased")} if store is not None else set()

    @cached_property
    def secrets(self) -> tuple[bytes, ...]:
        return tuple(self._secrets() if callable(self._secrets) else self._secrets)

    def __contains__(self, email: str) -> bool:
        return bool(self.hashes) and any(h in self.hashes for h in tombstones(self.secrets, email))


class LedgerStates(dict):
    """ledger.states(issue) that also finds a delivery recorded before its reader was erased (under the
    tombstone key) by the address: a reader who signed up again never gets that issue twice. Hashes
    only for an issue that has such rows."""

    def __init__(self, states: dict, erased: Erased):
        super().__init__(states)
        self.secrets = erased.secrets if any(k.startswith(TOMBSTONE) for k in states) else ()

    def get(self, email_key, default=None):
        found = super().get(email_key)
        for h in tombstones(self.secrets, email_key) if found is None else ():
            found = super().get(TOMBSTONE + h)
            if found is not None:
                break
        return default if found is None else found


def survey(store, ledger, secrets: Sequence[bytes], email: str) -> Found:
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
    found.tombstoned = email in Erased(store, secrets)
    return found


def erase(store, ledger, secret: bytes, email: str) -> Found:
    """Every row of the address deleted from the store, or (the events per-issue counts are made of)
    kept under the tombstone key with no name or reason; with its tombstone, in one transaction. Then
    its ledger rows rewritten to the tombstone key (another). Returns what was there."""
    email = key(email)
    tomb = tokens.erased_key(secret, email)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with store.transaction():
        store.lock([email])
        found = survey(store, ledger, [secret], email)
        db = store.db
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
    if ledger is not None:
        _rewrite(ledger.db, email, TOMBSTONE + tomb)
    return found


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


def lift(store, secrets: tokens.Secrets, email: str) -> None:
    """A confirmed sign-up (new, explicit consent): the address's tombstone goes, inside the caller's
    transaction. Its old ledger rows keep the tombstone key; LedgerStates still finds them."""
    store.db.execute(f"DELETE FROM erased WHERE hash IN ({store.db.json_values()})",
                     (_json(tombstones(secrets, email)),))


def _json(values: Iterable[str]) -> str:
    import json

    return json.dumps(list(values))
