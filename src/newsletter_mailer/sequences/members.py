"""Who is in which sequence, in the audience store (table sequence_readers, migrations v3).

A reader's place is the steps they have passed, by slug, and when the last one went: the
next step is the first after the latest passed one in the file as it is now. Suppressed
readers (unsubscribed, bounced, complained) stay in the table but are never due: the
store's status is joined in the same query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

from newsletter_mailer.audience.store import Audience
from newsletter_mailer.ledger import key
from newsletter_mailer.sequences.model import Sequence, StepInfo

FINISHED = 1 << 62  # "after" of the step past the last one: never due
_SUPPRESSED = "('unsubscribed', 'bounced', 'complained')"


@dataclass(frozen=True)
class Member:
    email: str
    name: str | None
    started_at: int
    last_step: str | None
    passed: tuple[str, ...]
    last_at: int | None
    left: bool = False   # suppressed in the store: out of every sequence


def enrol(store: Audience, sequence: str, emails: Iterable[str], now: int) -> int:
    """Start readers in a sequence (inside or outside a transaction); one already in keeps their place."""
    rows = [(sequence, key(e), int(now)) for e in emails]
    if not rows:
        return 0
    before = _count(store, sequence)
    store.db.executemany("INSERT INTO sequence_readers (sequence, email, started_at) VALUES (?,?,?) "
                         "ON CONFLICT (sequence, email) DO NOTHING", rows)
    return _count(store, sequence) - before


def _count(store: Audience, sequence: str) -> int:
    return store.db.execute("SELECT count(*) FROM sequence_readers WHERE sequence=?", (sequence,)).fetchone()[0]


def next_step(seq: Sequence, passed: Iterable[str]) -> StepInfo | None:
    """The first step after the latest one passed (None: finished)."""
    index = {s.slug: i for i, s in enumerate(seq.steps)}
    at = max((index[p] for p in passed if p in index), default=-1)
    return seq.steps[at + 1] if at + 1 < len(seq.steps) else None


def due(store: Audience, seq: Sequence, now: int) -> Iterator[Member]:
    """Readers whose next step is due now and whose last step is at least min_gap ago, not
    suppressed: one query (the next step's `after` chosen by the last step's slug), checked
    again here for readers whose last step is no longer in the file."""
    cases, args = [], []
    for i, step in enumerate(seq.steps):
        cases.append("WHEN m.last_step = ? THEN ?")
        args += [step.slug, seq.steps[i + 1].after if i + 1 < len(seq.steps) else FINISHED]
    sql = ("SELECT m.email, a.name, m.started_at, m.last_step, m.passed, m.last_at FROM sequence_readers m "
           "LEFT JOIN audience a ON a.email = m.email WHERE m.sequence = ? "
           f"AND (a.status IS NULL OR a.status NOT IN {_SUPPRESSED}) "
           "AND (m.last_at IS NULL OR m.last_at <= ?) "
           f"AND m.started_at + (CASE WHEN m.last_step IS NULL THEN ? {' '.join(cases)} ELSE 0 END) <= ? "
           "ORDER BY m.started_at, m.email")
    params = [seq.name, now - seq.min_gap, seq.steps[0].after, *args, now]
    for row in store.db.execute(sql, tuple(params)):
        member = _member(row)
        step = next_step(seq, member.passed)
        if step is not None and member.started_at + step.after <= now:
            yield member


def _member(row, left: bool = False) -> Member:
    email, name, started, last_step, passed, last_at = row
    return Member(email, name, int(started), last_step, tuple(filter(None, passed.split(" "))),
                  None if last_at is None else int(last_at), left)


def everyone(store: Audience, seq: Sequence) -> Iterator[Member]:
    """Every reader of the sequence, `left` set for the suppressed: for status and the audience list."""
    for row in store.db.execute(
            "SELECT m.email, a.name, m.started_at, m.last_step, m.passed, m.last_at, "
            f"coalesce(a.status IN {_SUPPRESSED}, false) FROM sequence_readers m "
            "LEFT JOIN audience a ON a.email = m.email WHERE m.sequence = ? ORDER BY m.email", (seq.name,)):
        yield _member(row[:6], bool(row[6]))


def positions(store: Audience) -> dict[str, str]:
    """email -> "welcome: 2-how-to-help; …" (each sequence and the last step passed), for `audience list`."""
    out: dict[str, list[str]] = {}
    for email, sequence, last in store.db.execute(
            "SELECT email, sequence, last_step FROM sequence_readers ORDER BY email, sequence"):
        out.setdefault(email, []).append(f"{sequence}: {last or 'started'}")
    return {e: "; ".join(v) for e, v in out.items()}


def passed(store: Audience, sequence: str, step: str, emails: Iterable[str], now: int) -> None:
    """The step recorded as passed for these readers (after the ledger said 'sent')."""
    rows = [(step, " " + step, int(now), sequence, key(e)) for e in emails]
    if not rows:
        return
    with store.transaction():
        store.db.executemany("UPDATE sequence_readers SET last_step=?, passed=passed || ?, last_at=? "
                             "WHERE sequence=? AND email=?", rows)


def dumps(values: Iterable[str]) -> str:
    return json.dumps(list(values))
