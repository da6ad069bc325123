"""The sign-up form's limits: what one visitor, one network and everyone together may ask for.

The counts live in the audience store's `rate` table, so they hold across uvicorn workers
and restarts, each sign-up counted in one transaction (on PostgreSQL behind one advisory
lock: sign-ups take turns, and no two can deadlock on the counters). In order:
- per client network (an IPv4 address, an IPv6 /64: one machine is given a whole /64) — over
  it, the form says "try again later";
- everyone together (`signup_per_hour_total`) — over it, the same;
- per mailbox, under each of `addresses.mailbox_keys` (`a+1@`, `A.b@gmail` … are one inbox) —
  over it, and for an address the store has as bounced or complained, the visitor gets the
  same answer as everyone else, but no email is sent (the form cannot probe the list).
Pending sign-ups older than `confirm_hours` are forgotten, at most once an hour (the first
sign-up of each hour does it), so a purge never costs a sign-up more than one small delete.

The client is the socket peer; behind a reverse proxy, `[web] trusted_proxies` names the
proxies whose X-Forwarded-For is believed (application.py applies uvicorn's middleware).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from enum import Enum

from newsletter_mailer.addresses import mailbox_keys
from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.settings import Web

WINDOW = 3600
NO_CONFIRMATION = ("bounced", "complained")


class Verdict(Enum):
    CONFIRM = "confirm"      # recorded pending: send the confirmation email
    QUIET = "quiet"          # same answer to the visitor, no email (over the mailbox limit, suppressed)
    LATER = "later"          # over the client's or everyone's limit: "try again later"


def network(host: str) -> str:
    """The client's bucket: an IPv4 address, the /64 of an IPv6 one (IPv4-mapped counted as IPv4)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "other:" + host[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))


def admit(store: Audience, web: Web, client: str, email: str, name: str | None, now: int) -> Verdict:
    """Count this sign-up against every limit and, when it may go on, record it pending: one
    transaction. `now` is Unix seconds (the caller's clock)."""
    with store.transaction():
        store.db.lock("newsletter sign-up")
        if store.count_hit("purge", 1, WINDOW, now):  # the first sign-up of the hour tidies up
            store.forget_rates(WINDOW, now)
            store.purge_pending(datetime.fromtimestamp(now, timezone.utc) - timedelta(hours=web.confirm_hours))
        if not store.count_hit(f"client:{network(client)}", web.signup_per_hour_client, WINDOW, now):
            return Verdict.LATER
        if not store.count_hit("total", web.signup_per_hour_total, WINDOW, now):
            return Verdict.LATER
        under = [store.count_hit(f"address:{k}", web.signup_per_hour_address, WINDOW, now)
                 for k in mailbox_keys(email)]
        if not all(under):
            return Verdict.QUIET
        current = store.status(email)
        if current is not None and current.status in NO_CONFIRMATION:
            return Verdict.QUIET
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
        store.apply(Change(email, "pending", "form", name=name), stamp)
    return Verdict.CONFIRM
