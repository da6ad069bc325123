"""What a send asks the audience store (audience.py): who left, who signed up, who left just now.

Read once for the plan: suppressed addresses (unsubscribed, bounced, complained) are skipped
and counted by reason like the CSV's own statuses; confirmed sign-ups not in the CSV are
added (the address is the key; a CSV row, even a skipped one, decides for its address).
Asked again per batch, right before the ledger's 'sending' write (on SQLite first a look at
the newest change, then one query only if something changed), so an
unsubscribe that arrives while a send runs is honoured for everyone not yet handed to the
provider. Those get no ledger row: they were never attempted, and the ledger records attempts.
Erased readers (`audience erase`) on the list are skipped too, "erased on request" (erased during
the send: left out of the later batches like those who left), and a delivery
recorded before an erasure is found under its tombstone key (erasure.LedgerStates).
A dry run reads the store only if it exists: it creates nothing (a database is always there).
"""

from __future__ import annotations

from typing import Iterator

from newsletter_mailer.audience import erasure
from newsletter_mailer.state.handle import State
from newsletter_mailer.providers.base import Recipient
from newsletter_mailer.subscribers import Subscriber

STORE = " (audience store)"  # appended to the status: "unsubscribed (audience store)"


class SendAudience:
    def __init__(self, state: State, *, dry_run: bool):
        self.store = state.audience(create=not dry_run)
        self.erased = erasure.Erased(self.store)
        self.mark = self.store.change_mark() if self.store else None
        self.suppressed = self.store.suppressed() if self.store else {}  # as the plan saw it
        self.now = self.suppressed  # as the store says now (re-read when it has changed)
        self.signups = self.store.signups() if self.store else []

    def skip_reason(self, email_key: str) -> str | None:
        """The plan's skip reason for an address erased or suppressed in the store, else None."""
        if email_key in self.erased:
            return erasure.REASON
        status = self.suppressed.get(email_key)
        return status + STORE if status else None

    def ledger_states(self, states: dict[str, tuple[str, bool]]) -> dict[str, tuple[str, bool]]:
        """The ledger's rows of the issue, also found by address when recorded before an erasure."""
        return erasure.LedgerStates(states, self.erased)

    def signed_up(self, claimed: set[str], tag: str | None, suppress: frozenset[str]) -> Iterator[Subscriber]:
        """Confirmed sign-ups the CSV does not have, as subscribers with no fields (defaults fill
        them; line 0). A sign-up has no tags, so --tag leaves them all out; --suppress applies."""
        if tag is not None:
            return
        for email, name in self.signups:
            if email not in claimed and email not in suppress:
                yield Subscriber(email, (name or "") if (name or "").isprintable() else "", {}, frozenset(), 0)

    def still_wanted(self, batch: list[Recipient]) -> tuple[list[Recipient], int]:
        """The batch without those suppressed since the plan, and how many that was."""
        if self.store is None or not batch:
            return batch, 0
        self.erased = self.erased.fresh(self.store)
        if self.mark is not None:  # SQLite: one cheap look at the newest change first
            mark = self.store.change_mark()
            if mark != self.mark:  # something changed: read the suppressions again, for every batch
                self.mark, self.now = mark, self.store.suppressed()
            gone = self.now
        else:
            gone = self.store.suppressed_among([r.email for r in batch])
        if not gone and not self.erased.hashes:
            return batch, 0
        kept = [r for r in batch if r.email.lower() not in gone and r.email not in self.erased]
        return kept, len(batch) - len(kept)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
