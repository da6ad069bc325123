"""The report's headline lines (shared by the terminal table and the page) and the page itself.

The page is one self-contained file: CSS and the SVG charts inline, no script, and a
Content-Security-Policy that forbids fetching anything, so opening it from the disk makes no
request. Everything from the ledger or the stores is one line (errors.one_line) and
HTML-escaped by the template; only http(s) links are made clickable.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from newsletter_mailer import files, render
from newsletter_mailer.errors import NewsletterError, one_line
from newsletter_mailer.report.numbers import IssueReport, IssueRow, trend_figure
from newsletter_mailer.report.charts import GMAIL_COMPLAINT_LIMIT
from newsletter_mailer.report import wording
from newsletter_mailer.report.data import rate

TEMPLATE = "report.html.j2"
SENDGRID_LABELS = (("delivered", "delivered"), ("opens", "opens"), ("unique_opens", "unique opens"),
                   ("clicks", "clicks"), ("unique_clicks", "unique clicks"), ("bounces", "bounces"),
                   ("spam_reports", "spam reports"))


@dataclass(frozen=True)
class Line:
    label: str
    count: str
    rate: str = ""
    href: str | None = None   # set only for an http(s) URL


def pct(r: float | None) -> str:
    return "—" if r is None else f"{r * 100:.2f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return " ".join(f"{n} {u}" for n, u in ((h, "h"), (m, "min"), (s, "s")) if n) or "0 s"


def headline(report: IssueReport) -> list[tuple[str, list[Line]]]:
    """(section, lines): the numbers the terminal prints and the page shows."""
    d, f, sent = report.row.delivery, report.row.feedback, report.row.sent
    delivery = [Line(s, str(n)) for s, n in sorted(d.counts.items(), key=lambda i: (i[0] != "sent", i[0]))]
    delivery += [Line(f"{s}: {why}", str(n)) for s, why, n in d.reasons]
    delivery += [Line("duration (first to last sent)", duration(d.seconds)),
                 Line("rate", wording.per_minute(d.per_minute))]
    complaint = rate(f.complaints, sent)
    over = complaint is not None and complaint >= GMAIL_COMPLAINT_LIMIT
    readers = [Line("unsubscribes", str(f.unsubscribes), pct(rate(f.unsubscribes, sent))),
               Line("hard bounces", str(f.hard_bounces), pct(rate(f.hard_bounces, sent))),
               Line("soft bounces", str(f.soft_bounces), pct(rate(f.soft_bounces, sent))),
               Line("complaints", str(f.complaints), pct(complaint) + (" — over" if over else " — under")
                    + " Gmail's 0.3% limit")]
    sections = [("Delivery (ledger)", delivery), ("Readers (audience store)", readers)]
    if d.variants:  # an issue with for: on sections: who got which sections
        sections.insert(1, ("Variants (ledger)", [Line(name, ", ".join(f"{s} {n}" for s, n in counts.items() if n))
                                                  for name, counts in d.variants.items()]))
    sections += _tracked(report)
    if report.ab:  # a subject test: both variants, then the choice
        sections.append(("Subject test", [Line(label, str(n), f"{pct(rate(k, n))} {report.ab_verb}") if not label.startswith(
            "winner") else Line(one_line(label if label != "winner" else "winner: not chosen yet"), "")
            for label, n, k in report.ab]))
    if report.sendgrid is not None:
        sections += _sendgrid(report)
    return sections


def _tracked(report: IssueReport) -> list[tuple[str, list[Line]]]:
    """[tracking] or SendGrid's tracking: per link in the order of the issue, total and unique clicks;
    scanners apart; the opens (our pixel, or SendGrid's open events)."""
    f, sent = report.row.feedback, report.row.sent
    source = _source(report)
    out = []
    links = [c for c in f.links if c.link > 0]
    if links:
        lines = [Line("readers who clicked a link", str(f.clickers), pct(rate(f.clickers, sent)))]
        lines += [Line(one_line(c.url), f"{c.clicks} ({c.uniques} unique)", pct(rate(c.uniques, sent)),
                       href=_href(c.url)) for c in links]
        scanned = sum(c.scanners for c in links)
        if scanned:
            lines.append(Line("link scanners (not counted above)", str(scanned)))
        out.append((f"Clicks per link ({source})", lines))
    pixel = next((c for c in f.links if c.link == 0), None)
    if pixel is not None:
        lines = [Line("opened", f"{pixel.clicks} ({pixel.uniques} unique)", pct(rate(pixel.uniques, sent)))]
        if pixel.scanners:
            lines.append(Line("machine opens (not counted above)", str(pixel.scanners)))
        lines.append(Line("note", "inflated: privacy proxies (Apple Mail) fetch every image"))
        out.append(("Opens (pixel)" if not f.from_sendgrid else f"Opens ({source})", lines))
    return out


def _source(report: IssueReport) -> str:
    """Who counted the clicks: newsletter serve, SendGrid's tracking (send refuses both on one send),
    or each for part of an issue sent through SendGrid and another provider."""
    if not report.row.feedback.from_sendgrid:
        return "newsletter serve"
    others = [p for p in report.row.delivery.providers if p != "sendgrid"]
    return "newsletter serve and SendGrid's Event Webhook" if others else "from SendGrid's Event Webhook"


def _sendgrid(report: IssueReport) -> list[tuple[str, list[Line]]]:
    sg, sent = report.sendgrid, report.row.sent
    lines = [Line("SendGrid stats", sg.note)] if sg.note else []
    if sg.source == "webhook":
        lines.append(Line("source", "the Event Webhook's counts"))
    lines += [Line(label, str(sg.totals[m]), pct(rate(sg.totals[m], sent)))
              for m, label in SENDGRID_LABELS if m in sg.totals]
    out = [("SendGrid", lines)]
    if sg.links:
        title = "Other clicked links (not the issue's links as sent)" if sg.others else "Most-clicked links"
        out.append((title, [Line(one_line(url), str(n), href=_href(url)) for url, n in sg.links]))
    return out


def _href(url: str) -> str | None:
    return url if url.startswith(("http://", "https://")) and one_line(url) == url else None


def archive_lines(rows: list[IssueRow]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The archive as a table: one row per issue, newest first, with the same rates."""
    head = ("issue", "date", "sent", "failed", "uncertain", "unsubscribes", "bounces", "complaints")
    clicked = any(r.click_rate() is not None for r in rows)  # [tracking] clicks: the click rate too
    return head + (("clicks",) if clicked else ()), [
        (r.slug, r.date.isoformat(), str(r.sent), str(r.delivery.counts.get("failed", 0)),
         str(r.delivery.counts.get("uncertain", 0)), *(pct(x) for x in r.rates()),
         *((pct(r.click_rate()),) if clicked else ())) for r in rows]


def issue_page(report: IssueReport, settings_dir: Path | None) -> str:
    return _render(settings_dir, title=f"Report: {report.row.slug}", report=report, sections=headline(report),
                   figures=[(f, Markup(f.svg)) for f in report.figures], archive=None)


def archive_page(rows: list[IssueRow], settings_dir: Path | None) -> str:
    figure = trend_figure(list(reversed(rows)))
    return _render(settings_dir, title="Report: every issue", report=None, sections=[],
                   figures=[(figure, Markup(figure.svg))] if figure else [], archive=archive_lines(rows))


def _render(settings_dir: Path | None, **context) -> str:
    env = render.environment(tuple(render.search_path(settings_dir)))
    now = wording.moment(dt.datetime.now(dt.timezone.utc))
    return env.get_template(TEMPLATE).render(generated=now, long_date=wording.long_date, **context)


def write_page(path: Path, page: str) -> None:
    """0600: failure reasons can quote recipients' addresses."""
    try:
        files.write_file(path, page, files.PRIVATE, root=path.parent)  # a linked build/<slug> is refused
    except OSError as exc:
        raise NewsletterError(f"cannot write the report: {exc.strerror or exc}", path=path,
                              hint="choose another --out") from None
