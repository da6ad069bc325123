"""The numbers behind `newsletter report`: read from the send ledger and the audience store, never written.

The ledger is read generically (rows counted by whatever statuses it holds), so statuses added
later (`scheduled`, …) are reported without a change here. What readers did is attributed to an
issue through the audience store's history (the issue an unsubscribe link or a webhook event
carried): each address counts once per kind, whether or not the event changed its status (an
unsubscribe after a complaint is still an unsubscribe from that issue). Soft bounces are the
blocks recorded for the issue (sendgrid_store): temporary refusals that suppress nobody.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from newsletter_mailer.audience import clicks, sendgrid_store
from newsletter_mailer.audience.clicks import LinkCount
from newsletter_mailer.audience.store import Audience
from newsletter_mailer.errors import NewsletterError, one_line
from newsletter_mailer.state.handle import State
from newsletter_mailer.ledger import Ledger

FEEDBACK = ("unsubscribed", "bounced", "complained")


def parse_time(text: str) -> dt.datetime:
    """A stored ISO time (UTC when it names no zone)."""
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


@dataclass
class Delivery:
    """What the ledger says about one issue."""

    counts: dict[str, int] = field(default_factory=dict)          # status -> rows ('sending' as uncertain)
    reasons: list[tuple[str, str, int]] = field(default_factory=list)  # (status, reason, rows), not 'sent'
    first_sent: dt.datetime | None = None
    last_sent: dt.datetime | None = None
    providers: tuple[str, ...] = ()
    variants: dict[str, dict[str, int]] = field(default_factory=dict)  # for: on sections: counts per variant

    @property
    def sent(self) -> int:
        return self.counts.get("sent", 0)

    @property
    def seconds(self) -> float | None:
        """The send's duration: first to last time a row became 'sent'."""
        if self.first_sent is None or self.last_sent is None:
            return None
        return (self.last_sent - self.first_sent).total_seconds()

    @property
    def per_minute(self) -> float | None:
        s = self.seconds
        return self.sent * 60 / s if s else None


@dataclass
class Feedback:
    """What readers did about one issue, each address once per kind."""

    unsubscribes: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    complaints: int = 0
    times: list[tuple[str, dt.datetime]] = field(default_factory=list)  # (kind, first time), for the timeline
    links: list[LinkCount] = field(default_factory=list)  # [tracking] clicks: per link in issue order (0: the pixel)
    clickers: int | None = None  # readers who clicked any tracked link; None: the issue's links were not tracked
    from_sendgrid: bool = False  # SendGrid's Event Webhook counted clicks or opens (the links' rows are its too)


def rate(n: int | None, sent: int) -> float | None:
    """n as a fraction of those sent (None when nothing was sent or n is unknown)."""
    return n / sent if sent and n is not None else None


def ledger_issues(ledger: Ledger) -> list[tuple[str, dt.datetime]]:
    """(slug, time of its last ledger change) for every issue the ledger has rows for."""
    return [(slug, parse_time(at)) for slug, at in
            ledger.db.execute("SELECT issue, max(updated_at) FROM deliveries GROUP BY issue")]


def delivery(ledger: Ledger, slug: str) -> Delivery:
    d = Delivery()
    for status, n in ledger.db.execute("SELECT status, count(*) FROM deliveries WHERE issue=? GROUP BY status",
                                       (slug,)):
        status = "uncertain" if status == "sending" else one_line(status)  # as a resumed send would find it
        d.counts[status] = d.counts.get(status, 0) + n
    d.reasons = [(one_line(s), one_line(r or "no reason recorded"), n) for s, r, n in ledger.db.execute(
        "SELECT status, reason, count(*) FROM deliveries WHERE issue=? AND status != 'sent' "
        "GROUP BY status, reason ORDER BY status, count(*) DESC, reason", (slug,))]
    first, last = ledger.db.execute("SELECT min(updated_at), max(updated_at) FROM deliveries "
                                    "WHERE issue=? AND status='sent'", (slug,)).fetchone()
    d.first_sent, d.last_sent = (parse_time(first), parse_time(last)) if first else (None, None)
    d.providers = tuple(p for (p,) in ledger.db.execute(
        "SELECT DISTINCT provider FROM deliveries WHERE issue=? AND provider IS NOT NULL ORDER BY provider",
        (slug,)))
    d.variants = {one_line(v): counts for v, counts in ledger.variants(slug).items()}
    return d


def feedback(store: Audience | None, slug: str) -> Feedback:
    f = Feedback()
    if store is None:
        return f
    kinds = {"unsubscribed": "unsubscribes", "bounced": "hard_bounces", "complained": "complaints"}
    for status, at in store.db.execute(
            "SELECT status, min(at) FROM history WHERE issue=? AND status IN (?,?,?) GROUP BY status, email",
            (slug, *FEEDBACK)):
        setattr(f, kinds[status], getattr(f, kinds[status]) + 1)
        f.times.append((status, parse_time(at)))
    f.links = clicks.counts(store.db, slug)
    if any(c.link > 0 for c in f.links):
        f.clickers = clicks.readers_clicking(store.db, slug)
    events = sendgrid_store.counts(store, slug)
    f.from_sendgrid = bool(f.links) and bool(events.get("click") or events.get("open"))
    for (created,) in store.db.execute("SELECT min(created) FROM blocks WHERE issue=? GROUP BY email", (slug,)):
        f.soft_bounces += 1
        if created:
            f.times.append(("soft bounce", dt.datetime.fromtimestamp(created, dt.timezone.utc)))
    return f


def no_ledger(state: State) -> NewsletterError:
    return NewsletterError(f"nothing sent yet: there is no send ledger ({state.describe()})",
                           hint="send an issue first, or point --state at the folder holding the ledger")
