"""SendGrid's signed Event Webhook (`POST /hooks/sendgrid`): check the signature, record the events.

The URL is public, so nothing is believed unless SendGrid signed it: ECDSA P-256 with SHA-256
over the timestamp header followed by the raw body, checked with the verification key
SendGrid shows (SENDGRID_WEBHOOK_PUBLIC_KEY, base64 DER). A timestamp older than MAX_AGE (or
further ahead than MAX_AHEAD) is refused even when signed, so a captured request cannot be
replayed later. Everything a batch carries is committed in one transaction before the 2xx:
SendGrid retries a batch it got no 2xx for, and an event's `sg_event_id` seen before counts
nothing (sendgrid_store).

What each event does: `bounce` → bounced (but `type: blocked` is only recorded: usually
temporary); `spamreport` → complained; `unsubscribe`, `group_unsubscribe` → unsubscribed;
`dropped` by its reason (SendGrid drops mail to addresses on its own suppression lists, so a
drop for "Bounced Address" is a bounce we had missed, and so on; other drops only count).
Every event counts per issue (the `issue` custom arg our sends add), clicks with their URL.
For an issue sent with SendGrid's own tracking (its links stored as sent, audience/clicks.py) a
`click` on one of those URLs and an `open` are also counted per link like newsletter serve's
/c/ and /o/ (totals, unique readers by a keyed hash, per-reader rows only with [tracking]
per_reader, the subject test's variant from the `ab` custom arg), at the event's own time; such
an event without an address or with a time outside the window is unstorable. A click on any
other URL (one holding a merge field) stays in the per-issue counts only, and every URL is kept
there without its query, fragment or an address in its path: no table holds who clicked.
`group_unsubscribe` / `group_resubscribe` for another unsubscribe group than
`delivery.sendgrid.asm_group_id` change nothing (the reader left another list of the account).
Each event is stored on its own (a savepoint): one the store cannot hold (a timestamp of 2^70,
a NUL in an address) is counted and logged without its address, and its neighbours are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from html import unescape
from typing import Callable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from newsletter_mailer.audience import clicks
from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.db import DATA_ERRORS
from newsletter_mailer.providers.base import env_value
from newsletter_mailer.audience.sendgrid_store import SEEN_DAYS, block, count, first_time, forget_old, note, plausible
from newsletter_mailer.tracked_links import OPEN_LINK
from newsletter_mailer.web.clicks import SCANNERS

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
KEY_VAR = "SENDGRID_WEBHOOK_PUBLIC_KEY"
MAX_BODY = 4 * 1024 * 1024   # SendGrid posts when a batch reaches 768 KB (or every 30 s)
MAX_AGE = 600
MAX_AHEAD = 300               # clock skew between SendGrid and us
EVENTS = ("processed", "deferred", "delivered", "bounce", "dropped", "spamreport", "unsubscribe",
          "group_unsubscribe", "group_resubscribe", "open", "click")
DROPPED = {"bounced address": "bounced", "invalid": "bounced", "spam reporting address": "complained",
           "unsubscribed address": "unsubscribed"}
log = logging.getLogger("newsletter_mailer.web.webhook")
STATUS = {"spamreport": "complained", "unsubscribe": "unsubscribed", "group_unsubscribe": "unsubscribed"}


class Unusable(ValueError):
    """An event that cannot be counted as it says (no address, a time out of range): unstorable."""


@dataclass(frozen=True)
class Counting:
    """Per-link counting of SendGrid's clicks and opens: the reader's keyed hash for (issue, address)
    (tokens.reader_key under the newsletter secret) and whether the address is kept ([tracking] per_reader)."""

    reader: Callable[[str, str], str]
    per_reader: bool = False


class Refused(Exception):
    """A request not from SendGrid (or not understood): its HTTP status and why, for the log only."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status, self.why = status, why


def public_key(env: Mapping[str, str]) -> ec.EllipticCurvePublicKey | None:
    """The verification key, or None when not configured; NewsletterError when it is not a P-256 key."""
    raw = env_value(env, KEY_VAR)
    if raw is None:
        return None
    body = "".join(line for line in raw.splitlines() if not line.startswith("-----"))
    try:
        key = serialization.load_der_public_key(base64.b64decode("".join(body.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise NewsletterError(f"{KEY_VAR} is not an ECDSA P-256 public key",
                              hint="paste the Verification Key from SendGrid's Event Webhook settings")
    return key


def verify(key: ec.EllipticCurvePublicKey, headers: Mapping[str, str], body: bytes, now: int) -> None:
    """Raise Refused unless SendGrid signed this timestamp and body, recently."""
    signature, stamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not signature or not stamp:
        raise Refused(401, "no signature")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise Refused(400, "malformed timestamp")
    try:
        der = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise Refused(400, "malformed signature") from None
    try:
        key.verify(der, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused(403, "wrong signature") from None
    if not -MAX_AHEAD <= now - int(stamp) <= MAX_AGE:
        raise Refused(403, "stale timestamp")


def events(body: bytes) -> list[dict]:
    """The batch: a JSON list of objects, else Refused(400)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "not JSON") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise Refused(400, "not a list of objects")
    return data


@dataclass
class Tally:
    """What a batch did, for the log: no address in it."""
    new: int = 0
    again: int = 0
    other_group: int = 0
    unstorable: int = 0


def receive(store: Audience, key: ec.EllipticCurvePublicKey, headers: Mapping[str, str], body: bytes,
            now: int, group: int | None = None, counting: Counting | None = None) -> Tally:
    """Verify, then record the batch in one transaction, each event stored or refused on its own;
    `group` is our unsubscribe group (asm_group_id), None when the sends use none; `counting`:
    clicks and opens per link too (None: per issue only)."""
    verify(key, headers, body, now)
    batch = events(body)
    tally, refused = Tally(), Counter()
    with store.transaction():
        forget_old(store, now)
        store.lock(e["email"] for e in batch if plausible(e.get("email")))
        # Two batches updating one issue's link counts in another order could deadlock: in turn.
        for issue in sorted({note(e.get("issue"), 200) for e in batch if e.get("event") in ("click", "open")} - {None}):
            store.db.lock(f"link counts {issue}")
        for event in batch:
            try:
                with store.db.savepoint():
                    if not first_time(store, _event_id(event), now):
                        tally.again += 1
                    elif _other_group(event, group):
                        tally.other_group += 1
                    else:
                        _record(store, event, now, counting)
                        tally.new += 1
            except DATA_ERRORS as exc:
                tally.unstorable += 1
                refused[f"{note(event.get('event'), 40) or 'unknown'} ({type(exc).__name__})"] += 1
    if refused:  # one line a batch, however many: the kinds and why, never an address
        log.warning("SendGrid webhook: %d event(s) could not be stored: %s", tally.unstorable,
                    ", ".join(f"{k} ×{n}" for k, n in sorted(refused.items())))
    return tally


def _other_group(event: dict, group: int | None) -> bool:
    """A group event for another unsubscribe group than ours (when ours is set)."""
    return (group is not None and event.get("event") in ("group_unsubscribe", "group_resubscribe")
            and str(event.get("asm_group_id")) != str(group))


def _event_id(event: dict) -> str:
    """SendGrid's id; for an event without one, a digest of the event itself."""
    given = event.get("sg_event_id")
    if isinstance(given, str) and 0 < len(given) <= 200:
        return given
    return "sha256:" + hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()


def _record(store: Audience, event: dict, now: int, counting: Counting | None) -> None:
    kind = event.get("event")
    if kind not in EVENTS:
        return
    issue = note(event.get("issue"), 200)
    email = event.get("email")
    if plausible(email):
        status = _status(kind, event)
        reason = _reason(event)
        if status:
            store.apply(Change(email, status, "sendgrid", issue=issue, reason=reason))
        elif kind == "bounce" and event.get("type") == "blocked":
            stamp = event.get("timestamp")
            block(store, email, stamp if isinstance(stamp, int) else 0, "sendgrid", note(event.get("status")),
                  reason, issue)
    if issue:
        sent = _per_link(store, event, issue, now, counting) if counting and kind in ("click", "open") else None
        url = event.get("url") if kind == "click" else None
        if sent is None and isinstance(url, str) and url.startswith(("http://", "https://")):
            sent = _kept(url)
        count(store, issue, kind, sent)


def _per_link(store: Audience, event: dict, issue: str, now: int, counting: Counting) -> str | None:
    """A click on one of the issue's links as sent, or an open of an issue sent with SendGrid's open
    tracking, counted as newsletter serve counts /c/ and /o/ (audience/clicks.py): the link's URL as
    sent (None for an open, or anything else, which counts nothing here)."""
    db = store.db
    link, url = _link(store, issue, event.get("url")) if event["event"] == "click" else (
        (OPEN_LINK, None) if clicks.counts_opens(db, issue) else (None, None))
    if link is None:
        return None
    email, at = event.get("email"), event.get("timestamp")
    if not plausible(email):
        raise Unusable("no address")
    if not (type(at) is int and now - SEEN_DAYS * 86400 <= at <= now + MAX_AHEAD):  # older: a retry unrecognised
        raise Unusable("time out of range")
    agent = event.get("useragent")
    scanner = event.get("sg_machine_open") is True or (isinstance(agent, str) and SCANNERS.search(agent.lower()))
    variant = event.get("ab")
    clicks.count_fetch(db, issue, link, counting.reader(issue, email), scanner=bool(scanner), now=at,
                       email=email if counting.per_reader else None,
                       variant=variant if variant in ("A", "B") else None)
    return url


def _kept(url: str) -> str | None:
    """A clicked URL as the per-issue counts keep it: without its query and fragment, and without a path
    that holds an address (a link with a merge field such as ?who={{ email }} would keep who clicked)."""
    try:
        parts = urlsplit(note(url, 2000) or "")
    except ValueError:  # an unbalanced [ in the host: counted without a URL
        return None
    decoded = parts.path
    for _ in range(3):  # an address encoded once, twice or three times (%40, %2540, %252540)
        decoded = unquote(decoded)
    path = "" if "@" in decoded or "%40" in decoded.lower() else parts.path
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, "", "")) or None


def _link(store: Audience, issue: str, url: object) -> tuple[int | None, str | None]:
    """(id, URL as sent) of the stored link the event's URL is (as sent, or as the HTML part wrote it,
    &amp; and all); (None, None) for any other."""
    if not isinstance(url, str) or not 0 < len(url) <= 8000:
        return None, None
    for candidate in dict.fromkeys((url, unescape(url))):
        link = clicks.link_of(store.db, issue, candidate)
        if link is not None:
            return link, candidate
    return None, None


def _status(kind: str, event: dict) -> str | None:
    if kind == "bounce":
        return None if event.get("type") == "blocked" else "bounced"
    if kind == "dropped":
        reason = event.get("reason")
        return DROPPED.get(reason.strip().lower()) if isinstance(reason, str) else None
    return STATUS.get(kind)


def _reason(event: dict) -> str:
    said = " ".join(t for t in (note(event.get("status")), note(event.get("reason"))) if t)
    return f"SendGrid {event['event']}" + (f": {said}"[:500] if said else "")
