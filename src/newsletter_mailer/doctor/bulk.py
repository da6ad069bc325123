"""Gmail's and Yahoo's bulk-sender requirements (since February 2024), each with this newsletter's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter_mailer.checks.result import Check

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.state.handle import State

LAST_ISSUES = 3  # Google Postmaster Tools judges the recent weeks, not the list's lifetime
AIM = 0.001      # both ask senders to stay under 0.1% and never reach 0.3%


@dataclass(frozen=True)
class Complaints:
    issues: tuple[str, ...]
    sent: int
    complaints: int

    @property
    def rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None


def recent_complaints(state: State) -> Complaints:
    """Complaints against messages sent, over the last issues in the ledger (none sent: empty)."""
    from newsletter_mailer.report.data import delivery, feedback, ledger_issues

    ledger = state.ledger(create=False)
    if ledger is None:
        return Complaints((), 0, 0)
    store = state.audience(create=False)
    try:
        slugs = tuple(slug for slug, _ in sorted(ledger_issues(ledger), key=lambda i: i[1])[-LAST_ISSUES:])
        sent = sum(delivery(ledger, s).sent for s in slugs)
        complaints = sum(feedback(store, s).complaints for s in slugs)
    finally:
        ledger.close()
        if store is not None:
            store.close()
    return Complaints(slugs, sent, complaints)


def complaint_check(c: Complaints) -> Check:
    from newsletter_mailer.report.charts import GMAIL_COMPLAINT_LIMIT

    rate = c.rate
    if rate is None:
        return Check("warning", "Gmail & Yahoo: spam complaints under 0.3% — no issue sent yet, nothing to measure",
                     "bulk")
    said = f"{rate:.2%} over the last {len(c.issues)} issue(s) ({c.complaints} of {c.sent:,} sent)"
    if rate >= GMAIL_COMPLAINT_LIMIT:
        return Check("error", f"Gmail & Yahoo: spam complaints under 0.3% — {said}: too many; mail only readers who "
                              "asked for it (double opt-in) and make unsubscribing obvious", "bulk")
    if rate >= AIM:
        return Check("warning", f"Gmail & Yahoo: spam complaints under 0.3% — {said}: aim under 0.1%", "bulk")
    return Check("ok", f"Gmail & Yahoo: spam complaints under 0.3% — {said}", "bulk")


def table(checks: list[Check], complaints: Complaints) -> list[Check]:
    """The requirements, each met (ok) or not (failure), from the checks above."""
    ok = {c.name for c in checks if c.level == "ok"} - {c.name for c in checks if c.level == "error"}
    unknown = {c.name for c in checks if c.level == "warning"} - ok  # e.g. a relay that should sign
    spf, dkim = "spf-sender" in ok, "dkim-key" in ok
    rows = [
        ("all senders: SPF or DKIM", spf or dkim, False),
        ("bulk senders: SPF and DKIM", spf and dkim, "dkim-key" in unknown or "spf-sender" in unknown),
        ("bulk senders: a DMARC record (p=none at least)", "dmarc-record" in ok, False),
        ("bulk senders: From aligned with SPF or DKIM", "dmarc-alignment" in ok, False),
        ("bulk senders: one-click unsubscribe (RFC 8058)", "unsubscribe" in ok, False),
    ]
    out = [Check("ok", f"Gmail & Yahoo: {what} — met", "bulk") if met else
           Check("warning", f"Gmail & Yahoo: {what} — not confirmed here (see above)", "bulk") if maybe else
           Check("error", f"Gmail & Yahoo: {what} — not met (see above)", "bulk")
           for what, met, maybe in rows]
    return out + [complaint_check(complaints)]
