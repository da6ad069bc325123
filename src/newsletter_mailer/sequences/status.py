"""Where the readers of a sequence are: per step, due now, sent, failed, uncertain, waiting, left."""

from __future__ import annotations

from newsletter_mailer.sequences import members
from newsletter_mailer.sequences.model import Sequence
from newsletter_mailer.state.handle import State

COLUMNS = ("due", "sent", "failed", "uncertain", "waiting", "left")


def step_counts(state: State, seq: Sequence, now: int) -> dict[str, dict[str, int]]:
    """{step slug: {column: readers}}: sent/failed/uncertain from the ledger (as a send's status
    counts them), due/waiting/left from each reader's next step (left: suppressed in the store)."""
    out = {s.slug: dict.fromkeys(COLUMNS, 0) for s in seq.steps}
    tried: dict[str, dict[str, tuple[str, bool]]] = {}  # a step's ledger rows: held ones are not "due"
    ledger = state.ledger(create=False)
    if ledger is not None:
        try:
            for step in seq.steps:
                counts = ledger.counts(seq.ledger_key(step))
                out[step.slug].update(sent=counts["sent"] + counts["scheduled"], failed=counts["failed"],
                                      uncertain=counts["uncertain"])
                if counts["uncertain"] or counts["failed"]:
                    tried[step.slug] = ledger.states(seq.ledger_key(step))
        finally:
            ledger.close()
    store = state.audience(create=False)
    if store is not None:
        try:
            for m in members.everyone(store, seq):
                step = members.next_step(seq, m.passed)
                if step is None:
                    continue
                c = out[step.slug]
                row = tried.get(step.slug, {}).get(m.email)
                if row is not None and (row[0] in ("uncertain", "sending") or row[1]):
                    continue  # counted in its ledger column: held back, not waiting or due
                if m.left:
                    c["left"] += 1
                elif m.started_at + step.after <= now and (m.last_at is None or m.last_at + seq.min_gap <= now):
                    c["due"] += 1
                else:
                    c["waiting"] += 1
        finally:
            store.close()
    return out
