"""`newsletter audience sync`: SendGrid's suppression lists pulled into the audience store.

So that nobody SendGrid has suppressed is even attempted (and a later move to SMTP keeps
them suppressed), each list becomes statuses with source `sendgrid` and SendGrid's reason:
bounces and invalid emails → bounced, spam reports → complained, global unsubscribes and
the `asm_group_id` group's unsubscribes → unsubscribed; blocks are recorded, never
suppressing (sendgrid_store). Incremental: each list asks only for entries since its last
complete sync. Pages of PAGE entries (`limit`/`offset`) until a short one, each page one
transaction, so memory stays flat however long the lists are.

Plain GETs with urllib (no redirects followed: the key goes to SENDGRID_API_HOST only);
`fetch=` replaces it in tests. 429 waits until X-RateLimit-Reset, 5xx and network errors
back off and retry (a GET is safe to repeat), 401/403 stop with one line; the key is never
shown.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.errors import NewsletterError, redact
from newsletter_mailer.ledger import key as email_key
from newsletter_mailer.providers.base import backoff_base, env_value
from newsletter_mailer.providers.sendgrid import (MAX_ATTEMPTS, MAX_RATE_LIMIT_RETRIES, error_detail, api_host,
                                                  rate_limit_wait)
from newsletter_mailer.audience.sendgrid_store import MAX_NOTE, block, note, plausible, since, synced
from newsletter_mailer.settings import Settings

log = logging.getLogger(__name__)

# One GET: (path, query) in; (status, headers, body) out, whatever the status. Raises OSError
# (urllib.error.URLError included) or http.client.HTTPException when no answer came.
Fetch = Callable[[str, Mapping[str, int]], "tuple[int, Mapping[str, str] | None, bytes]"]

PAGE = 500                       # SendGrid's largest page for the suppression lists
KEY_HINT = "check SENDGRID_API_KEY: the sync needs read access to Suppressions"
# name, path, the status an entry means (None: a block, recorded only)
LISTS = (("bounces", "/v3/suppression/bounces", "bounced"),
         ("spam_reports", "/v3/suppression/spam_reports", "complained"),
         ("invalid_emails", "/v3/suppression/invalid_emails", "bounced"),
         ("blocks", "/v3/suppression/blocks", None),
         ("unsubscribes", "/v3/suppression/unsubscribes", "unsubscribed"))


@dataclass
class ListReport:
    name: str
    fetched: int = 0
    changed: int = 0     # statuses changed (blocks: new blocks recorded)


@dataclass
class SyncReport:
    lists: list[ListReport] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.lists)


def sync(settings: Settings, store: Audience, env: Mapping[str, str], *, fetch: Fetch | None = None,
         sleep: Callable[[float], Any] = time.sleep, clock: Callable[[], float] = time.time,
         advance: Callable[[int], None] | None = None) -> SyncReport:
    """Every suppression list, in turn; raises NewsletterError (what is already in stays in).
    advance(n) after each page of n entries is stored (the command's progress)."""
    api_key = env_value(env, "SENDGRID_API_KEY")
    if api_key is None:
        raise NewsletterError("SENDGRID_API_KEY is not set", hint="only SendGrid senders need it: export a key with Suppressions read access")
    sg = settings.delivery.sendgrid
    client = ApiClient(fetch or UrllibFetch(api_key, api_host(env), float(sg.timeout)), api_key,
                     backoff_base(env), sleep)
    report = SyncReport()
    for name, path, status in LISTS:
        report.lists.append(_sync_list(store, client, name, path, status, int(clock()), advance))
    if sg.asm_group_id is not None:
        name = f"group {sg.asm_group_id}"
        items = [{"email": e} for e in client.get(f"/v3/asm/groups/{sg.asm_group_id}/suppressions", {})]
        with store.transaction():  # the whole group every time: SendGrid offers no paging or time filter
            changed = _record(store, items, "unsubscribed", name)
        report.lists.append(ListReport(name, len(items), changed))
        if advance:
            advance(len(items))
    return report


def _sync_list(store: Audience, client: ApiClient, name: str, path: str, status: str | None,
               started: int, advance: Callable[[int], None] | None = None) -> ListReport:
    """One list from its last sync on, page by page; its sync time is stored with the last page."""
    report, offset = ListReport(name), 0
    query = {"limit": PAGE}
    start = since(store, name)
    if start is not None:
        query["start_time"] = start
    while True:
        items = client.get(path, {**query, "offset": offset})
        with store.transaction():
            report.changed += _record(store, items, status, name)
            if len(items) < PAGE:
                synced(store, name, started)
        report.fetched += len(items)
        if advance:
            advance(len(items))
        if len(items) < PAGE:
            return report
        offset += len(items)


def _record(store: Audience, items: list, status: str | None, name: str) -> int:
    """One page into the store (inside a transaction); an address already at that status is skipped,
    so the boundary entries a sync sees twice and the re-read group leave no duplicate history."""
    entries = [i for i in items if isinstance(i, dict) and plausible(i.get("email"))]
    store.lock(i["email"] for i in entries)
    current = store.suppressed_among(i["email"] for i in entries) if status else {}
    changed = 0
    for item in entries:
        email, reason = item["email"], _reason(name, item)
        if status is None:
            created = item.get("created")
            changed += block(store, email, created if isinstance(created, int) else 0, "sendgrid",
                             note(item.get("status")), reason)
        elif current.get(email_key(email)) != status:
            changed += store.apply(Change(email, status, "sendgrid", reason=reason))
            current[email_key(email)] = status
    return changed


def _reason(name: str, item: dict) -> str:
    """SendGrid's own words (its status code first for bounces), else which list it came from."""
    said = " ".join(t for t in (note(item.get("status")), note(item.get("reason"))) if t)
    return f"SendGrid {name.replace('_', ' ')}" + (f": {said}"[:MAX_NOTE] if said else "")


class KeyRefused(NewsletterError):
    """401/403: the key cannot read suppressions (a Mail-Send-only key, or a wrong one)."""


class ApiClient:
    """GETs with SendGrid's retry rules; answers are JSON lists."""

    def __init__(self, fetch: Fetch, api_key: str, backoff: float, sleep: Callable[[float], Any]):
        self.fetch, self.api_key, self.backoff, self.sleep = fetch, api_key, backoff, sleep

    def get(self, path: str, query: Mapping[str, int]) -> list:
        attempts = limited = 0
        while True:
            try:
                status, headers, body = self.fetch(path, query)
            except (OSError, http.client.HTTPException) as exc:
                reason = f"cannot reach SendGrid ({type(exc).__name__})"
            else:
                if 200 <= status < 300:
                    return self._items(path, body)
                if status == 429 and limited < MAX_RATE_LIMIT_RETRIES:
                    limited += 1
                    wait = rate_limit_wait(headers, self.backoff * 2 ** (limited - 1))
                    log.warning("SendGrid rate limit (429) on %s; waiting %.1f s", path, wait)
                    self.sleep(wait)
                    continue
                if status < 500:
                    raise self._refused(status, path, body) from None
                reason = f"SendGrid server error {status}"
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                raise NewsletterError(f"{reason} on {path} after {attempts} attempts", exit_code=1,
                                      hint="what was synced so far is kept; run the sync again later")
            wait = self.backoff * 2 ** (attempts - 1)
            log.warning("%s on %s; retrying in %.2f s", reason, path, wait)
            self.sleep(wait)

    def _items(self, path: str, body: bytes) -> list:
        try:
            items = json.loads(body)
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise NewsletterError(f"SendGrid's answer to {path} is not a JSON list", exit_code=1)
        return items

    def _refused(self, status: int, path: str, body: bytes) -> NewsletterError:
        message = redact(error_detail(body)[0], (self.api_key,))
        if status in (401, 403):
            return KeyRefused(f"SendGrid refused the API key ({status}) on {path}: {message}", hint=KEY_HINT)
        return NewsletterError(f"SendGrid answered {status} on {path}: {message}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back as an answer: the Authorization header goes nowhere else


class UrllibFetch:
    """The real fetch: one GET to SENDGRID_API_HOST with the key in the Authorization header."""

    def __init__(self, api_key: str, host: str, timeout: float):
        self.host, self.timeout = host, timeout
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json",
                        "User-Agent": "newsletter-mailer"}
        self.opener = urllib.request.build_opener(_NoRedirect)

    def __call__(self, path: str, query: Mapping[str, int]) -> tuple[int, Mapping[str, str] | None, bytes]:
        url = self.host + path + ("?" + urlencode(query) if query else "")
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read()
