"""[tracking] clicks in the audience store: links as sent, per-link counts, scanners apart.

Privacy by default: per link only totals (clicks, unique readers, scanner fetches). Uniqueness
comes from `click_seen`, a keyed hash of (issue, reader) per link (tokens.reader_key: no address,
and not joinable across issues), deleted after [tracking] keep_days; only with
[tracking] per_reader does `reader_clicks` keep an address next to a link.

A scanner is counted apart, never as a reader: a HEAD request or a known scanner's user agent
(decided by the route, web/clicks.py), and a message whose every link (two or more) is fetched
within BURST_SECONDS: those clicks are then moved from the readers' counts to the scanners'.

SendGrid's Event Webhook (web/webhook.py) feeds the same rows when SendGrid tracked the issue: its
links as sent are stored here too (`pixel`: its open tracking, link 0), and each click or open
event is `count`ed inside the webhook's own transaction, like a fetch of /c/ or /o/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from newsletter_mailer.audience import erasure
from newsletter_mailer.state.db import Database

BURST_SECONDS = 5
ANY_LINK = -1  # link_counts row of the issue's readers who clicked any link: the click rate
VARIANT_LINK = {"A": -2, "B": -3}  # the same per subject-test variant (ab_test.py)
VARIANT_OPEN = {"A": -4, "B": -5}  # readers who opened (link 0), per variant: [tracking] ab_winner = "opens"
DAY = 86_400


@dataclass(frozen=True)
class LinkCount:
    link: int
    url: str
    clicks: int
    uniques: int
    scanners: int


def store_links(db: Database, issue: str, links: Iterable[str], *, pixel: bool = False) -> None:
    """The issue's links as this send sends them (id i + 1 is links[i]), committed before the first
    message goes: a click redirects only to a URL stored here. A later send of an edited issue adds
    its URLs beside the old ones, so links already delivered keep working. pixel: opens are counted
    too (SendGrid's open tracking: its open events count as link 0 only for an issue marked so)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [(issue, i, url, now) for i, url in enumerate(links, 1)] + ([(issue, 0, "", now)] if pixel else [])
    if not rows:
        return
    with db.transaction():
        db.executemany("INSERT INTO tracked_links (issue, link, url, sent_at) VALUES (?,?,?,?) "
                       "ON CONFLICT (issue, link, url) DO NOTHING", rows)


def stored(db: Database, issue: str) -> list[tuple[int, str]]:
    """(link id, URL) of every link stored for the issue: an earlier run's ids, kept by the next (SendLinks)."""
    return [(r[0], r[1]) for r in db.execute("SELECT link, url FROM tracked_links WHERE issue=? ORDER BY link, sent_at",
                                             (issue,))]


def urls(db: Database, issue: str, link: int) -> list[str]:
    """The URLs sent as this link of the issue (one, unless the issue was edited between sends)."""
    return [r[0] for r in db.execute("SELECT url FROM tracked_links WHERE issue=? AND link=? ORDER BY sent_at",
                                     (issue, link))]


def link_of(db: Database, issue: str, url: str) -> int | None:
    """The id of the issue's link sent as exactly this URL (SendGrid's click event names the URL), or None."""
    row = db.execute("SELECT link FROM tracked_links WHERE issue=? AND url=? AND link > 0 ORDER BY sent_at DESC",
                     (issue, url)).fetchone()
    return row[0] if row else None


def counts_opens(db: Database, issue: str) -> bool:
    """The issue was sent with SendGrid's open tracking (store_links(pixel=True))."""
    return db.execute("SELECT 1 FROM tracked_links WHERE issue=? AND link=0", (issue,)).fetchone() is not None


def record(db: Database, issue: str, link: int, reader: str, *, scanner: bool, now: int,
           email: str | None = None, variant: str | None = None, in_message: int | None = None) -> str:
    """One fetch of a tracked link (or the pixel, link 0), committed: 'scanner' or 'reader' (how it
    was counted, after the burst rule). email is kept only when given ([tracking] per_reader);
    in_message: how many tracked links the reader's message holds (an audience's edition may hold
    fewer than the issue), else the issue's count."""
    with db.transaction():
        return count_fetch(db, issue, link, reader, scanner=scanner, now=now, email=email, variant=variant,
                           in_message=in_message)


def count_fetch(db: Database, issue: str, link: int, reader: str, *, scanner: bool, now: int,
                email: str | None = None, variant: str | None = None, in_message: int | None = None) -> str:
    """record's counting inside the caller's transaction (the webhook's, one savepoint an event). An
    erased reader's click from an old message counts, but their address is not kept again."""
    if email is not None and erasure.stand_in(db, email) is not None:
        email = None
    db.execute("INSERT INTO link_counts (issue, link, clicks, uniques, scanners) VALUES (?,?,0,0,0) "
               "ON CONFLICT (issue, link) DO NOTHING", (issue, link))
    if scanner:
        db.execute("UPDATE link_counts SET scanners=scanners+1 WHERE issue=? AND link=?", (issue, link))
        return "scanner"
    db.lock(f"clicks {issue} {reader}")  # one reader's fetches in turn: the burst rule reads them all
    row = db.execute("SELECT kind FROM click_seen WHERE issue=? AND reader=? AND link=?",
                     (issue, reader, link)).fetchone()
    if row is None:
        db.execute("INSERT INTO click_seen (issue, reader, link, kind, at) VALUES (?,?,?,'reader',?)",
                   (issue, reader, link, now))
    elif row[0] == "scanner":  # a scanner fetched it first; this is the reader
        db.execute("UPDATE click_seen SET kind='reader', at=? WHERE issue=? AND reader=? AND link=?",
                   (now, issue, reader, link))
    unique = int(row is None or row[0] == "scanner")
    if unique and link == 0 and variant in VARIANT_OPEN:
        _count_rows(db, issue, +1, (VARIANT_OPEN[variant],))
    if unique and link > 0 and db.execute(
            "SELECT 1 FROM click_seen WHERE issue=? AND reader=? AND link > 0 AND link <> ? AND kind='reader'",
            (issue, reader, link)).fetchone() is None:
        _count_any(db, issue, +1, variant)
    db.execute("UPDATE link_counts SET clicks=clicks+1, uniques=uniques+? WHERE issue=? AND link=?",
               (unique, issue, link))
    if email is not None:
        db.execute("INSERT INTO reader_clicks (email, issue, link, at) VALUES (?,?,?,?)",
                   (email, issue, link, now))
    if link > 0 and _burst(db, issue, reader, now, email, variant, in_message):
        return "scanner"
    return "reader"


def _burst(db: Database, issue: str, reader: str, now: int, email: str | None, variant: str | None,
           in_message: int | None) -> bool:
    """Every link of the message (two or more) fetched within BURST_SECONDS: a scanner, moved apart."""
    total = in_message or db.execute("SELECT count(DISTINCT link) FROM tracked_links WHERE issue=? AND link > 0",
                                     (issue,)).fetchone()[0]
    if total < 2:
        return False
    recent = [r[0] for r in db.execute("SELECT link FROM click_seen WHERE issue=? AND reader=? AND kind='reader' "
                                       "AND link > 0 AND at >= ?", (issue, reader, now - BURST_SECONDS))]
    if len(recent) < total:
        return False
    db.execute("UPDATE click_seen SET kind='scanner' WHERE issue=? AND reader=? AND link > 0 AND at >= ?",
               (issue, reader, now - BURST_SECONDS))
    db.executemany("UPDATE link_counts SET clicks=clicks-1, uniques=uniques-1, scanners=scanners+1 "
                   "WHERE issue=? AND link=?", [(issue, link) for link in recent])
    _count_any(db, issue, -1, variant)
    if email is not None:
        db.execute("DELETE FROM reader_clicks WHERE email=? AND issue=? AND link > 0 AND at >= ?",
                   (email, issue, now - BURST_SECONDS))
    return True


def _count_any(db: Database, issue: str, step: int, variant: str | None) -> None:
    _count_rows(db, issue, step, (ANY_LINK, VARIANT_LINK.get(variant or "")))


def _count_rows(db: Database, issue: str, step: int, rows: Iterable[int | None]) -> None:
    for row in rows:
        if row is not None:
            db.execute("INSERT INTO link_counts (issue, link, clicks, uniques, scanners) VALUES (?,?,0,0,0) "
                       "ON CONFLICT (issue, link) DO NOTHING", (issue, row))
            db.execute("UPDATE link_counts SET uniques=uniques+? WHERE issue=? AND link=?", (step, issue, row))


def forget_old(db: Database, keep_days: int, now: int) -> int:
    """Drop the keyed reader hashes older than keep_days (the counts stay); how many went."""
    with db.transaction():
        return db.execute("DELETE FROM click_seen WHERE at < ?", (now - keep_days * DAY,)).rowcount


def counts(db: Database, issue: str) -> list[LinkCount]:
    """Per link, in the order the links appear in the issue (the pixel, link 0, first when counted)."""
    rows = db.execute(
        "SELECT t.link, t.url, coalesce(c.clicks, 0), coalesce(c.uniques, 0), coalesce(c.scanners, 0) "
        "FROM (SELECT link, min(url) AS url FROM tracked_links WHERE issue=? AND link > 0 GROUP BY link) t "
        "LEFT JOIN link_counts c ON c.issue=? AND c.link=t.link ORDER BY t.link", (issue, issue)).fetchall()
    out = [LinkCount(*r) for r in rows]
    pixel = db.execute("SELECT clicks, uniques, scanners FROM link_counts WHERE issue=? AND link=0",
                       (issue,)).fetchone()
    return ([LinkCount(0, "", *pixel)] if pixel else []) + out


def readers_clicking(db: Database, issue: str) -> int:
    """Readers who clicked any of the issue's links (counted at the time, so kept past keep_days)."""
    row = db.execute("SELECT uniques FROM link_counts WHERE issue=? AND link=?", (issue, ANY_LINK)).fetchone()
    return row[0] if row else 0


def variant_clickers(db: Database, issue: str, metric: str = "clicks") -> dict[str, int]:
    """Readers who clicked any link (metric "opens": who opened), per subject-test variant: {'A': n, 'B': n}."""
    rows = VARIANT_OPEN if metric == "opens" else VARIANT_LINK
    found = dict(db.execute("SELECT link, uniques FROM link_counts WHERE issue=? AND link IN (?,?)",
                            (issue, rows["A"], rows["B"])))
    return {v: found.get(link, 0) for v, link in rows.items()}


def sent_urls(db: Database, issue: str) -> set[str]:
    """Every URL stored as one of the issue's links (the report leaves them out of SendGrid's "other" clicks)."""
    return {r[0] for r in db.execute("SELECT url FROM tracked_links WHERE issue=? AND link > 0", (issue,))}


def history(db: Database) -> dict[str, list[str]]:
    """[tracking] per_reader: each address's clicks as 'issue#link', oldest first."""
    out: dict[str, list[str]] = {}
    for email, issue, link in db.execute("SELECT email, issue, link FROM reader_clicks ORDER BY at, issue, link"):
        out.setdefault(email, []).append(f"{issue}#{link}")
    return out

