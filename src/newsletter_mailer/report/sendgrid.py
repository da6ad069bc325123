"""SendGrid's numbers for an issue it sent: `/v3/categories/stats`, else the Event Webhook's counts.

Every SendGrid send tags its messages with the issue's slug as the first category
(providers/sendgrid.py), so the category's daily stats are the issue's. The GET goes through
the suppressions sync's client (same host check, retries, no redirects, key never shown).
Without a key, or when SendGrid refuses, the report still works: it says why, and falls back
to the webhook's per-issue counts (which know no unique opens or clicks). When SendGrid's tracking
counted the issue's links as sent (audience/clicks.py), the per-link table has them; `links` then
holds only the other URLs clicked (a link holding a merge field).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from newsletter_mailer.audience import clicks, sendgrid_store
from newsletter_mailer.audience.store import Audience
from newsletter_mailer.errors import NewsletterError, redact
from newsletter_mailer.providers.base import backoff_base, env_value
from newsletter_mailer.providers.sendgrid import api_host
from newsletter_mailer.audience.sendgrid_sync import Fetch, UrllibFetch, ApiClient
from newsletter_mailer.settings import Settings

STATS_PATH = "/v3/categories/stats"
METRICS = ("delivered", "opens", "unique_opens", "clicks", "unique_clicks", "bounces", "spam_reports")
WEBHOOK = {"delivered": "delivered", "open": "opens", "click": "clicks", "bounce": "bounces",
           "spamreport": "spam_reports"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class SendGridNumbers:
    source: str | None = None                 # "api", "webhook" or None (nothing known)
    note: str | None = None                   # why the API's stats are not shown
    totals: dict[str, int] = field(default_factory=dict)   # METRICS known (webhook: no unique_*)
    days: list[tuple[str, dict[str, int]]] = field(default_factory=list)  # API only, oldest first
    links: list[tuple[str, int]] = field(default_factory=list)  # most clicked first (webhook)
    others: bool = False  # links are those not among the links as sent (those are counted per link)


def sendgrid_numbers(store: Audience | None, slug: str, since: dt.date, settings: Settings,
                     env: Mapping[str, str], *, fetch: Fetch | None = None,
                     sleep: Callable[[float], Any] = time.sleep) -> SendGridNumbers:
    sent = clicks.sent_urls(store.db, slug) if store else set()
    clicked = sendgrid_store.clicks(store, slug) if store else []
    out = SendGridNumbers(links=[(u, n) for u, n in clicked if u not in sent][:10], others=bool(sent))
    api_key = env_value(env, "SENDGRID_API_KEY")
    if api_key is None:
        out.note = "not available (SENDGRID_API_KEY not set)"
    else:
        try:
            client = ApiClient(fetch or UrllibFetch(api_key, api_host(env), float(settings.delivery.sendgrid.timeout)),
                             api_key, backoff_base(env), sleep)
            query = {"start_date": since.isoformat(), "categories": slug, "aggregated_by": "day", "limit": 500}
            out.days = daily(client.get(STATS_PATH, query), slug)
        except NewsletterError as exc:
            out.note = f"not available ({redact(exc.message, (api_key,))})"
        else:
            out.source = "api"
            out.totals = {m: sum(day[m] for _, day in out.days) for m in METRICS}
            return out
    webhook = sendgrid_store.counts(store, slug) if store else {}
    if webhook:
        out.source = "webhook"
        out.totals = {name: webhook.get(event, 0) for event, name in WEBHOOK.items()}
    return out


def daily(answer: list, category: str) -> list[tuple[str, dict[str, int]]]:
    """[(YYYY-MM-DD, {metric: n})] for the category, from SendGrid's per-day answer; anything
    malformed counts as zero rather than breaking the report."""
    out = []
    for day in answer:
        if not isinstance(day, dict) or not isinstance(day.get("date"), str) or not _DATE.fullmatch(day["date"]):
            continue
        metrics: dict = {}
        for stat in day.get("stats") if isinstance(day.get("stats"), list) else ():
            if isinstance(stat, dict) and stat.get("name") == category and isinstance(stat.get("metrics"), dict):
                metrics = stat["metrics"]
        out.append((day["date"], {m: _count(metrics.get(m)) for m in METRICS}))
    return sorted(out)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
