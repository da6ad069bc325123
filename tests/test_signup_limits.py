"""The sign-up form under abuse (issue 19): limits that hold, and a confirmation email that carries
nothing from the visitor. Against the real server (uvicorn in a subprocess), on SQLite and on
PostgreSQL; the purge and the windows also in-process with a controlled clock."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.settings import Web
from newsletter_mailer.web import signup
from tests.helpers.webserver import WebServer, start, stop
from newsletter_mailer.state import State

SAME_PAGE = "Check your inbox"


def _start(folder: Path, web: str, url: str | None) -> WebServer:
    return start(folder, web, {"NEWSLETTER_DATABASE_URL": url} if url else None)


def _store(server: WebServer, url: str | None) -> Audience:
    return State(server.state, url).audience()


def _mails(server: WebServer) -> list[email.message.EmailMessage]:
    folder = server.outbox / "_confirm"
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(folder.glob("*.eml"))] if folder.is_dir() else []


def _to(server: WebServer, addresses) -> int:
    wanted = {a.lower() for a in addresses}
    return sum(1 for m in _mails(server) if str(m["To"]).lower() in wanted)


def _sign_up(c: httpx.Client, address: str, name: str = "Ann Reader", client_ip: str | None = None):
    headers = {"X-Forwarded-For": client_ip} if client_ip else {}
    return c.post("/subscribe", data={"email": address, "name": name, "consent": "yes"}, headers=headers)


def _fresh(domain: str = "example.org") -> str:
    return f"r{uuid.uuid4().hex[:10]}@{domain}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request, tmp_path_factory):
    """One server per backend with a generous client limit: the per-inbox rules and the mail."""
    url = None
    if request.param == "postgres":
        from newsletter_mailer.state.migrations import init_database

        url = request.getfixturevalue("pg_cluster").new_database()
        init_database(url)
    s = _start(tmp_path_factory.mktemp("signup"), "signup_per_hour_client = 100000\n"
               "signup_per_hour_total = 100000\nsignup_per_hour_address = 3", url)
    with httpx.Client(base_url=s.url, timeout=30) as c:
        yield s, c, url
    stop(s)


def test_plus_tags_dots_and_case_of_one_gmail_inbox_count_as_one(site):
    server, c, _ = site
    user = uuid.uuid4().hex[:8]
    variants = [f"{user}@gmail.com", f"{user}+1@gmail.com", f"{user.upper()}+2@GMAIL.com",
                f"{user[:3]}.{user[3:]}@gmail.com", f"{user[:2]}.{user[2:]}+x@googlemail.com",
                f"{user[0]}.{user[1:]}@GoogleMail.com"]
    answers = {(r.status_code, r.text) for r in (_sign_up(c, v) for v in variants)}
    assert len(answers) == 1 and SAME_PAGE in answers.pop()[1]
    assert _to(server, variants) == 3  # signup_per_hour_address, whichever spelling


def test_plus_tags_count_for_every_domain_but_dots_only_where_ignored(site):
    server, c, _ = site
    user = uuid.uuid4().hex[:8]
    tagged = [f"{user}+{i}@example.org" for i in range(5)]
    answers = {(r.status_code, r.text) for r in (_sign_up(c, v) for v in tagged)}
    assert len(answers) == 1
    assert _to(server, tagged) == 3
    dotted = [f"{user[:4]}.{user[4:]}@example.net", f"{user}@example.net"]  # two mailboxes elsewhere
    for v in dotted:
        _sign_up(c, v)
    assert _to(server, dotted[:1]) == 1 and _to(server, dotted[1:]) == 1


def test_a_name_with_a_url_never_reaches_the_email_but_is_kept(site):
    server, c, url = site
    address = _fresh()
    name = "Your account is locked. Verify now at https://evil.example/login"
    assert _sign_up(c, address, name=name).status_code == 200
    [mail] = [m for m in _mails(server) if str(m["To"]) == address]
    whole = mail.as_string()
    for part in ("evil.example", "account is locked", "Verify now"):
        assert part not in whole
    text = mail.get_body(("plain",)).get_content()
    assert text.startswith("Hello,\n")
    store = _store(server, url)
    try:
        assert store.status(address).name == name
    finally:
        store.close()


def test_bounced_and_complained_addresses_get_no_confirmation_and_the_same_page(site):
    server, c, url = site
    bounced, complained, unsubscribed, new = _fresh(), _fresh(), _fresh(), _fresh()
    store = _store(server, url)
    try:
        store.record([Change(bounced, "bounced", "mailbox"), Change(complained, "complained", "sendgrid"),
                      Change(unsubscribed, "unsubscribed", "link")])
    finally:
        store.close()
    answers = [_sign_up(c, a) for a in (bounced, complained, unsubscribed, new)]
    assert len({(r.status_code, r.text) for r in answers}) == 1
    assert _to(server, [bounced, complained]) == 0
    assert _to(server, [unsubscribed]) == 1 and _to(server, [new]) == 1  # leaving is not forever
    store = _store(server, url)
    try:
        assert store.status(bounced).status == "bounced" and store.status(complained).status == "complained"
    finally:
        store.close()


@pytest.fixture
def pg_or_sqlite(backend, request) -> str | None:
    if backend == "sqlite":
        return None
    from newsletter_mailer.state.migrations import init_database

    url = request.getfixturevalue("pg_cluster").new_database()
    init_database(url)
    return url


def test_client_networks_ipv6_by_64_ipv4_by_address_and_the_hourly_total(tmp_path, pg_or_sqlite):
    s = _start(tmp_path, 'signup_per_hour_client = 2\nsignup_per_hour_total = 7\ntrusted_proxies = ["127.0.0.1"]',
               pg_or_sqlite)
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            one_64 = [_sign_up(c, _fresh(), client_ip=f"2001:db8:1:2::{i}").status_code for i in (1, 2, 3)]
            other_64 = _sign_up(c, _fresh(), client_ip="2001:db8:1:3::1").status_code
            one_v4 = [_sign_up(c, _fresh(), client_ip=ip).status_code
                      for ip in ("198.51.100.7", "198.51.100.7", "198.51.100.7")]
            mapped = _sign_up(c, _fresh(), client_ip="::ffff:198.51.100.7").status_code
            other_v4 = _sign_up(c, _fresh(), client_ip="198.51.100.8").status_code
            assert one_64 == [200, 200, 429] and other_64 == 200
            assert one_v4 == [200, 200, 429] and mapped == 429 and other_v4 == 200
            # 6 taken so far (the refused ones are not counted): one more, then everyone waits
            assert _sign_up(c, _fresh(), client_ip="203.0.113.1").status_code == 200
            mailed = len(_mails(s))
            late = [_fresh() for _ in range(3)]
            answers = [_sign_up(c, a, client_ip=f"203.0.113.{i + 2}") for i, a in enumerate(late)]
            assert {r.status_code for r in answers} == {429}
            assert all("try again" in r.text for r in answers)
            assert len(_mails(s)) == mailed == 7
    finally:
        stop(s)


def test_the_forwarded_header_is_believed_only_from_a_trusted_proxy(tmp_path, pg_or_sqlite):
    s = _start(tmp_path, 'signup_per_hour_client = 2\ntrusted_proxies = ["10.0.0.0/8", "192.0.2.1"]', pg_or_sqlite)
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:  # from 127.0.0.1: not a trusted proxy
            codes = [_sign_up(c, _fresh(), client_ip=f"198.51.100.{i}").status_code for i in (1, 2, 3)]
        assert codes == [200, 200, 429]
    finally:
        stop(s)


def test_old_pending_sign_ups_are_purged_by_the_server(tmp_path, pg_or_sqlite):
    s = _start(tmp_path, "confirm_hours = 2", pg_or_sqlite)
    old, recent, confirmed = _fresh(), _fresh(), _fresh()
    now = datetime.now(timezone.utc)
    store = _store(s, pg_or_sqlite)
    try:
        with store.transaction():
            store.apply(Change(old, "pending", "form", name="http://spam.example"),
                        (now - timedelta(hours=3)).isoformat(timespec="seconds"))
            store.apply(Change(recent, "pending", "form"), (now - timedelta(hours=1)).isoformat(timespec="seconds"))
            store.apply(Change(confirmed, "subscribed", "form"), (now - timedelta(days=30)).isoformat(timespec="seconds"))
    finally:
        store.close()
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert _sign_up(c, _fresh()).status_code == 200
        store = _store(s, pg_or_sqlite)
        try:
            assert store.status(old) is None and store.history(old) == []
            assert store.status(recent).status == "pending"
            assert store.status(confirmed).status == "subscribed"
        finally:
            store.close()
    finally:
        stop(s)


def _admit(store: Audience, web: Web, email: str, now: int, client: str = "192.0.2.9") -> signup.Verdict:
    return signup.admit(store, web, client, email, None, now)


def test_windows_and_purge_follow_the_injected_clock(tmp_path, pg_or_sqlite):
    store = State(tmp_path, pg_or_sqlite).audience()
    web = Web(signup_per_hour_address=1, signup_per_hour_client=100, confirm_hours=48)
    t0 = 1_900_000_000 // 3600 * 3600
    try:
        assert _admit(store, web, "ann+a@example.org", t0) is signup.Verdict.CONFIRM
        assert _admit(store, web, "Ann+b@example.org", t0 + 60) is signup.Verdict.QUIET
        assert _admit(store, web, "ann+c@example.org", t0 + 3600) is signup.Verdict.CONFIRM  # a new hour
        assert store.status("ann+a@example.org").status == "pending"
        assert _admit(store, web, "bob@example.org", t0 + 3600 + 47 * 3600) is signup.Verdict.CONFIRM
        assert store.status("ann+a@example.org").status == "pending"  # 47 h: still waiting
        assert _admit(store, web, "cid@example.org", t0 + 50 * 3600) is signup.Verdict.CONFIRM
        assert store.status("ann+a@example.org") is None and store.status("ann+c@example.org") is None
        assert store.status("bob@example.org").status == "pending"
    finally:
        store.close()


@pytest.mark.parametrize("host, bucket", [("198.51.100.7", "198.51.100.7"), ("::ffff:198.51.100.7", "198.51.100.7"),
                                          ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
                                          ("fe80::1%eth0", "fe80::/64"), ("unknown", "other:unknown")])
def test_client_network(host, bucket):
    assert signup.network(host) == bucket
