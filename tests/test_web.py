"""The reader web app against a real uvicorn server in a subprocess (issue 11)."""

from __future__ import annotations

import email
import email.header
import email.policy
import os
import re
import subprocess
import sys
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from newsletter_mailer import tokens
from newsletter_mailer.settings import load_settings
from tests.helpers.webserver import ROOT, SECRET, WebServer, client, free_port, start, stop, wait_ready  # noqa: F401 (client: a fixture)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("web"), "signup_per_hour_client = 100000\nsignup_per_hour_address = 3")
    yield s
    stop(s)




def fresh() -> str:
    return f"reader-{uuid.uuid4().hex[:10]}@example.org"


def unsub_path(server, address: str) -> str:
    return "/u/" + tokens.make_unsubscribe(server.secret, server.list_id, address)


def status(server, address: str):
    store = server.audience()
    try:
        entry = store.status(address)
        return (entry.status, entry.source) if entry else None
    finally:
        store.close()


def test_get_shows_one_button_and_changes_nothing(server, client):
    address = fresh()
    r = client.get(unsub_path(server, address))
    assert r.status_code == 200
    assert f"Unsubscribe {address.split('@')[0]}@… from CSCP Newsletter?" in r.text
    assert r.text.count("<button") == 1 and 'method="post"' in r.text
    assert address not in r.text
    assert status(server, address) is None


BODIES = {
    "urlencoded": dict(data={"List-Unsubscribe": "One-Click"}),
    "multipart": dict(files={"List-Unsubscribe": (None, "One-Click")}),
    "empty": dict(content=b""),
    "text/plain": dict(content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"}),
    "json": dict(content=b'{"List-Unsubscribe": "One-Click"}', headers={"Content-Type": "application/json"}),
}


@pytest.mark.parametrize("variant", sorted(BODIES))
def test_one_click_post_unsubscribes_whatever_the_body(server, client, variant):
    address = fresh()
    r = client.post(unsub_path(server, address), **BODIES[variant])
    assert r.status_code == 200
    assert "You are unsubscribed" in r.text
    assert 'href="../subscribe"' in r.text and "Subscribe again" in r.text
    assert status(server, address) == ("unsubscribed", "one-click")


def test_the_pages_own_button_unsubscribes(server, client):
    address = fresh()
    page = client.get(unsub_path(server, address)).text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page))
    assert fields["List-Unsubscribe"] == "One-Click"
    r = client.post(unsub_path(server, address), data=fields)
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    assert status(server, address) == ("unsubscribed", "link")


def test_the_issue_in_the_link_is_recorded_with_the_unsubscribe(server, client):
    address, older = fresh(), fresh()
    token = tokens.make_unsubscribe(server.secret, server.list_id, address, "2024-05-spring")
    assert client.post("/u/" + token, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert client.post(unsub_path(server, older), content=b"").status_code == 200  # a link without the issue
    store = server.audience()
    try:
        assert (store.status(address).status, store.status(address).issue) == ("unsubscribed", "2024-05-spring")
        assert (store.status(older).status, store.status(older).issue) == ("unsubscribed", None)
    finally:
        store.close()


def _bad_tokens(server, address: str) -> dict[str, str]:
    good = tokens.make_unsubscribe(server.secret, server.list_id, address)
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    return {
        "tampered": flipped,
        "truncated": good[:-3],
        "other secret": tokens.make_unsubscribe(b"another secret", server.list_id, address),
        "other list": tokens.make_unsubscribe(server.secret, "Other <other.example.org>", address),
        "other purpose": tokens.make_confirm(server.secret, server.list_id, address, None, 2**31),
        "garbage": "not-a-token-at-all-but-long-enough",
    }


@pytest.mark.parametrize("kind", ["tampered", "truncated", "other secret", "other list", "other purpose",
                                  "garbage"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bad_token_gets_a_clear_4xx_page_and_changes_nothing(server, client, kind, method):
    address = fresh()
    r = client.request(method, "/u/" + _bad_tokens(server, address)[kind],
                       data={"List-Unsubscribe": "One-Click"} if method == "POST" else None)
    assert 400 <= r.status_code < 500
    assert "This link is not valid" in r.text
    assert status(server, address) is None


def _sign_up(client, address: str, name: str = "Ann Reader", **extra) -> httpx.Response:
    return client.post("/subscribe", data={"email": address, "name": name, "consent": "yes", **extra})


def test_sign_up_then_confirm(server, client):
    address = fresh()
    form = client.get("/subscribe")
    assert form.status_code == 200 and 'name="website"' in form.text and "I can unsubscribe" in form.text
    r = _sign_up(client, address)
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert status(server, address) == ("pending", "form")
    [mail] = server.mails_to(address)
    assert mail["Subject"] == "Please confirm your subscription to CSCP Newsletter"
    text = mail.get_body(("plain",)) if hasattr(mail, "get_body") else None
    body = (text or mail.get_payload()[0]).get_payload(decode=True).decode()
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body).group()
    assert address not in link
    page = client.get(link)
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert status(server, address) == ("pending", "form")
    done = client.post(link, data={"confirm": "yes"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    store = server.audience()
    assert store.status(address).status == "subscribed" and store.status(address).name == "Ann Reader"
    assert (address, "Ann Reader") in store.signups()
    store.close()


def test_the_confirmation_email_is_a_proper_message_whose_link_works(server, client):
    address = fresh()
    assert _sign_up(client, address, name="Ann Proper").status_code == 200
    [path] = [p for p in (server.outbox / "_confirm").glob("*.eml")
              if email.message_from_bytes(p.read_bytes())["To"] == address]
    raw = path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o600" and address not in path.name
    assert b"\r\n\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF throughout
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert not mail.defects and all(not part.defects for part in mail.walk())
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        assert len(mail.get_all(header)) == 1, header
    assert mail["Auto-Submitted"] == "auto-generated" and mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/[A-Za-z0-9_-]+", text).group()
    assert link in html and address not in link
    assert client.post(link, content=b"").status_code == 200
    assert status(server, address) == ("subscribed", "form")


HEADERS = ["Content-Type", "MIME-Version", "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted"]


@pytest.mark.parametrize("name", ["Ann\r\nBcc: victim@example.org", "Ann\nSubject: spam",
                                  "=?utf-8?q?Ann=0D=0ABcc:_victim@example.org?=",
                                  "=?utf-8?b?QW5uDQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?="])
def test_a_sign_up_name_cannot_add_a_header_line(server, client, name):
    address = fresh()
    assert _sign_up(client, address, name=name).status_code == 200
    [mail] = server.mails_to(address)
    head = bytes(mail)[:bytes(mail).index(b"\n\n")].decode()
    assert "victim@" not in head and "spam" not in head and "Bcc" not in head
    decoded = str(email.header.make_header(email.header.decode_header(mail["Subject"])))
    assert "\r" not in decoded and "\n" not in decoded
    assert sorted(mail.keys()) == sorted(HEADERS + (["Reply-To"] if "Reply-To" in mail else []))
    store = server.audience()
    try:
        stored = store.status(address).name
    finally:
        store.close()
    assert stored and "\r" not in stored and "\n" not in stored  # kept as text, never decoded


def test_an_expired_confirmation_is_refused(server, client):
    address = fresh()
    token = tokens.make_confirm(server.secret, server.list_id, address, None, int(time.time()) - 1)
    for method in ("GET", "POST"):
        r = client.request(method, f"/confirm/{token}")
        assert r.status_code == 404 and "This link is not valid" in r.text
    assert status(server, address) is None


def test_same_answer_for_new_pending_and_subscribed(server, client):
    new, pending, subscribed = fresh(), fresh(), fresh()
    _sign_up(client, pending)
    token = tokens.make_confirm(server.secret, server.list_id, subscribed, None, int(time.time()) + 60)
    client.post(f"/confirm/{token}")
    assert status(server, subscribed) == ("subscribed", "form")
    answers = [_sign_up(client, a) for a in (new, pending, subscribed)]
    assert len({(r.status_code, r.text) for r in answers}) == 1
    assert status(server, subscribed) == ("subscribed", "form")


def test_per_address_rate_limit(server, client):
    address = fresh()
    answers = {(r.status_code, r.text) for r in (_sign_up(client, address) for _ in range(5))}
    assert len(answers) == 1
    assert len(server.mails_to(address)) == 3


def test_per_client_rate_limit(tmp_path):
    s = start(tmp_path, "signup_per_hour_client = 2")
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            codes = [_sign_up(c, fresh()).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        stop(s)


def test_honeypot_gets_the_same_answer_and_sends_nothing(server, client):
    human, bot = fresh(), fresh()
    a, b = _sign_up(client, human), _sign_up(client, bot, website="https://spam.example")
    assert (a.status_code, a.text) == (b.status_code, b.text)
    assert server.mails_to(bot) == [] and status(server, bot) is None


def test_bad_sign_up_input_is_a_4xx_form(server, client):
    r = _sign_up(client, "not an address <script>")
    assert r.status_code == 400 and "valid email address" in r.text and "<script>" not in r.text
    r = client.post("/subscribe", data={"email": fresh()})
    assert r.status_code == 400 and "consent" in r.text


class _FormFields(HTMLParser):
    """The form's action and method and each control as a browser would submit it."""

    def __init__(self):
        super().__init__()
        self.form, self.controls = {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = a
        elif tag == "input":
            self.controls.append(a)


def test_the_docs_sign_up_snippet_posts_what_the_app_expects(server, client):
    readme = (ROOT / "docs" / "readers.md").read_text(encoding="utf-8")
    block = readme.split("<!-- signup-snippet:start -->", 1)[1].split("<!-- signup-snippet:end -->", 1)[0]
    parsed = _FormFields()
    parsed.feed(block.split("```html", 1)[1].split("```", 1)[0])
    assert parsed.form["method"] == "post" and parsed.form["action"].endswith("/subscribe")
    assert {c["name"] for c in parsed.controls} == {"email", "name", "website", "consent"}
    address = fresh()
    typed = {"email": address, "name": "Snippet Reader"}  # what a person fills in; the honeypot stays as it is
    data = {c["name"]: c.get("value", "") if c["type"] == "checkbox" else typed.get(c["name"], c.get("value", ""))
            for c in parsed.controls}
    assert data["website"] == "" and data["consent"] == "yes"
    r = client.post(urlsplit(parsed.form["action"]).path, data=data)
    assert r.status_code == 200 and "Check your inbox" in r.text
    store = server.audience()
    try:
        entry = store.status(address)
        assert (entry.status, entry.source, entry.name) == ("pending", "form", "Snippet Reader")
    finally:
        store.close()
    assert len(server.mails_to(address)) == 1


def test_security_headers(server, client):
    address = fresh()
    for path in (unsub_path(server, address), "/confirm/garbage-garbage-garbage-garbage", "/nowhere"):
        r = client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    form = client.get("/subscribe")
    assert "frame-ancestors" not in form.headers["Content-Security-Policy"]
    assert "default-src 'none'" in form.headers["Content-Security-Policy"]
    assert "<script" not in form.text and "style=" not in form.text


def test_the_sign_up_answers_can_show_in_the_embedding_frame(server, client):
    """The form is made to be framed by the organisation's site, so its answers are too."""
    ok, bad = _sign_up(client, fresh()), _sign_up(client, "not an address")
    assert (ok.status_code, bad.status_code) == (200, 400) and "Check your inbox" in ok.text
    for r in (ok, bad):
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors" not in csp and "X-Frame-Options" not in r.headers
        assert "default-src 'none'" in csp and r.headers["Cache-Control"] == "no-store"


def test_oversized_body_is_refused(server, client):
    address = fresh()
    r = client.post(unsub_path(server, address), content=b"x" * 200_000)
    assert r.status_code == 413
    assert status(server, address) is None
    r = client.post("/subscribe", content=b"email=" + b"a" * 200_000,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_no_token_address_or_secret_in_the_server_log(server, client):
    address = fresh()
    path = unsub_path(server, address)
    client.get(path)
    client.post(path)
    _sign_up(client, address)
    client.get(f"/{address}?email={address}")
    [mail] = server.mails_to(address)
    confirm = re.search(r"/confirm/[A-Za-z0-9_-]+", mail.get_payload()[0].get_payload(decode=True).decode()).group()
    client.get(confirm)
    log = server.log.read_text(errors="replace")
    assert '"POST /u/… HTTP/1.1" 200' in log and '"GET /confirm/… HTTP/1.1" 200' in log
    for secret_thing in (address, path[3:], confirm[9:], server.secret.decode(), address.split("@")[0]):
        assert secret_thing not in log


_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data",
                          "multipart/form-data; boundary=xyz", "text/plain", "application/json", "",
                          "application/x-www-form-urlencoded; charset=latin-1"])
_HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=_METHODS, route=st.integers(0, 4), segment=st.text(max_size=60), data=st.binary(max_size=3000),
       ctype=_TYPES | _HEADER_TEXT, extra=_HEADER_TEXT)
def test_generated_requests_never_500(server, client, method, route, segment, data, ctype, extra):
    from urllib.parse import quote

    good = tokens.make_unsubscribe(server.secret, server.list_id, "generated@example.org")
    paths = [f"/u/{quote(segment, safe='')}", f"/confirm/{quote(segment, safe='')}", "/subscribe",
             f"/u/{good}", "/" + quote(segment, safe="/")]
    r = client.request(method, paths[route], content=data,
                       headers={"Content-Type": ctype, "X-Extra": extra, "Accept-Language": extra})
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_serve_run_starts_uvicorn_with_redacted_access_log(tmp_path):
    """serve.run (the coming `newsletter serve`): the same app, access log on, no token in it."""
    port = free_port()
    config = tmp_path / "newsletter.toml"
    config.write_text((ROOT / "newsletter.toml").read_text())
    code = (f"from pathlib import Path; from newsletter_mailer.web.serve import run; import os; "
            f"run('127.0.0.1', {port}, Path({str(config)!r}), Path({str(tmp_path / 'state')!r}), os.environ)")
    log = tmp_path / "serve.log"
    env = dict(os.environ, NEWSLETTER_SECRET=SECRET, PYTHONPATH=str(ROOT / "src"))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=env)
    server = WebServer(f"http://127.0.0.1:{port}", tmp_path, tmp_path / "state", tmp_path / "outbox", log,
                       SECRET.encode(), load_settings(config)[0].list_id_header, proc)
    try:
        wait_ready(server)
        address = fresh()
        path = unsub_path(server, address)
        assert httpx.post(server.url + path, timeout=30).status_code == 200
        assert status(server, address) == ("unsubscribed", "one-click")
    finally:
        stop(server)
    text = log.read_text(errors="replace")
    assert '"POST /u/… HTTP/1.1" 200' in text
    assert path[3:] not in text and address not in text
