"""`newsletter report`: how an issue did (or, without one, how every issue did), gathered once for
both the terminal table and the page.

An issue is dated by its file's `date` when the file is still in issues/, else by its last send,
so the archive is ordered newest first even for issues whose file has gone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from newsletter_mailer import ab_test
from newsletter_mailer.report import charts as report_charts
from newsletter_mailer.compose import load_issue
from newsletter_mailer.state.handle import State
from newsletter_mailer.errors import NewsletterError, unreadable
from newsletter_mailer.publish import issue_files
from newsletter_mailer.report.charts import Figure
from newsletter_mailer.report.data import Delivery, Feedback, delivery, feedback, ledger_issues, no_ledger, rate
from newsletter_mailer.report.sendgrid import SendGridNumbers, sendgrid_numbers
from newsletter_mailer.schema import slug_of
from newsletter_mailer.audience.sendgrid_sync import Fetch
from newsletter_mailer.settings import Settings

TREND_ISSUES = 12


@dataclass
class IssueRow:
    """One issue's headline numbers: a row of the archive, a point of the trend."""

    slug: str
    date: dt.date
    last_change: dt.datetime
    delivery: Delivery
    feedback: Feedback

    @property
    def sent(self) -> int:
        return self.delivery.sent

    def rates(self) -> tuple[float | None, float | None, float | None]:
        """Unsubscribes, bounces (hard and soft), complaints: as fractions of those sent."""
        f, sent = self.feedback, self.sent
        return (rate(f.unsubscribes, sent), rate(f.hard_bounces + f.soft_bounces, sent), rate(f.complaints, sent))

    def click_rate(self) -> float | None:
        """Readers who clicked a tracked link ([tracking] clicks), as a fraction of those sent."""
        return rate(self.feedback.clickers, self.sent)


@dataclass
class IssueReport:
    row: IssueRow
    subject: str
    sendgrid: SendGridNumbers | None
    trend: list[IssueRow]
    figures: list[Figure] = field(default_factory=list)
    ab: list[tuple[str, int, int]] | None = None  # a subject test's variants (ab_test.summary)
    ab_verb: str = "clicked"  # what the test counts ([tracking] ab_winner)


def archive(settings_dir: Path, state: State) -> list[IssueRow]:
    """Every issue in the ledger, newest first (a report never creates a file: a missing one is said)."""
    ledger = state.ledger(create=False)
    if ledger is None:
        raise no_ledger(state)
    store = state.audience(create=False)
    try:
        dates = _issue_dates(settings_dir)
        rows = [IssueRow(slug, dates.get(slug) or last.date(), last, delivery(ledger, slug),
                         feedback(store, _sealed_slug(slug))) for slug, last in ledger_issues(ledger)]
    finally:
        ledger.close()
        if store is not None:
            store.close()
    return sorted(rows, key=lambda r: (r.date, r.last_change), reverse=True)


def _sealed_slug(ledger_key: str) -> str:
    """A sequence step's rows (sequence:<name>:<step>, sequences/model.py) beside the issues; its
    readers' links are sealed with the step's own slug, so their unsubscribes are found by it."""
    return ledger_key.rsplit(":", 1)[1] if ledger_key.startswith("sequence:") else ledger_key


def issue_report(issue: Path, settings: Settings, settings_dir: Path, state: State, env: Mapping[str, str],
                 *, fetch: Fetch | None = None) -> IssueReport:
    slug = slug_of(issue)
    if not issue.is_file():
        raise unreadable(issue, FileNotFoundError() if not issue.exists() else IsADirectoryError())
    parsed = load_issue(issue)
    rows = archive(settings_dir, state)
    row = next((r for r in rows if r.slug == slug), None)
    if row is None:
        raise NewsletterError(f"{slug} has not been sent: the ledger has no rows for it", path=issue,
                              hint="`newsletter report` without an issue lists the issues it has")
    sg = None
    if "sendgrid" in row.delivery.providers:
        store = state.audience(create=False)
        try:
            since = (row.delivery.first_sent or row.last_change).date()
            sg = sendgrid_numbers(store, slug, since, settings, env, fetch=fetch)
        finally:
            if store is not None:
                store.close()
    trend = [r for r in reversed(rows) if (r.date, r.last_change) <= (row.date, row.last_change)][-TREND_ISSUES:]
    metric = settings.tracking.ab_winner
    report = IssueReport(row, parsed.subject, sg, trend, ab=_subject_test(state, slug, metric),
                         ab_verb=ab_test.VERB[metric])
    report.figures = _figures(report)
    return report


def _subject_test(state: State, slug: str, metric: str) -> list[tuple[str, int, int]] | None:
    ledger, store = state.ledger(create=False), state.audience(create=False)
    try:
        return ab_test.summary(ledger.db, store.db if store is not None else None, slug, metric) if ledger else None
    finally:
        for db in (ledger, store):
            if db is not None:
                db.close()


def funnel_stages(report: IssueReport) -> list[tuple[str, int]]:
    """sent → delivered → opened → clicked, as far as SendGrid's numbers go."""
    stages = [("sent", report.row.sent)]
    sg, f = report.sendgrid, report.row.feedback
    if sg is not None and sg.totals:
        unique = sg.source == "api"
        pixel = next((c for c in f.links if c.link == 0), None) if f.from_sendgrid else None
        clickers = f.clickers if f.from_sendgrid else None
        stages.append(("delivered", sg.totals["delivered"]))
        if unique or pixel is None:
            stages.append(("opened" if unique else "opens (events)", sg.totals["unique_opens" if unique else "opens"]))
        else:  # the webhook's open events counted once per reader (audience/clicks.py)
            stages.append(("opened", pixel.uniques))
        if unique or clickers is None:
            stages.append(("clicked" if unique else "clicks (events)",
                           sg.totals["unique_clicks" if unique else "clicks"]))
        else:
            stages.append(("clicked", clickers))
    elif f.clickers is not None:  # [tracking] clicks through newsletter serve
        stages.append(("clicked", f.clickers))
    return stages


def trend_figure(rows: list[IssueRow]) -> Figure | None:
    """Rows oldest first."""
    return report_charts.trend([(r.slug, r.date, r.sent, *r.rates(), r.click_rate()) for r in rows])


def _figures(report: IssueReport) -> list[Figure]:
    figures = [report_charts.funnel(funnel_stages(report)),
               report_charts.timeline(report.row.delivery, report.row.feedback),
               report_charts.per_day(report.sendgrid.days) if report.sendgrid else None,
               trend_figure(report.trend)]
    return [f for f in figures if f is not None]


def _issue_dates(settings_dir: Path) -> dict[str, dt.date]:
    """slug -> the issue file's date, for the files still in issues/ that can be read."""
    try:
        paths = issue_files(settings_dir)
    except NewsletterError:
        return {}
    dates = {}
    for path in paths:
        try:
            dates[path.stem] = load_issue(path).date
        except NewsletterError:
            continue  # a broken or half-edited file: dated by its last send instead
    return dates
