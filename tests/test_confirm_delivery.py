"""The sign-up confirmation through the configured provider: SMTP (aiosmtpd), SendGrid (Prism and a
scripted server), and a provider that refuses (same page, pending kept, no address in the log)."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.web.application import create_app
from tests.helpers.prism import prism_server
from tests.conftest import without_web
from tests.helpers.webserver import ROOT, SECRET, free_port
from newsletter_mailer.state import State

ADDRESS = "confirm-reader@example.org"


def _app(tmp_path, provider: str, **env):
    toml = without_web((ROOT / "newsletter.toml").read_text(encoding="utf-8"))
    (tmp_path / "newsletter.toml").write_text(toml + '\n[web]\nbase_url = "https://news.example.org"\n',
                                              encoding="utf-8")
    text = (tmp_path / "newsletter.toml").read_text()
    (tmp_path / "newsletter.toml").write_text(re.sub(r'(?m)^provider = .*$', f'provider = "{provider}"', text))
    env = {"NEWSLETTER_SECRET": SECRET, "NEWSLETTER_BACKOFF_BASE": "0", **env}
    return create_app(tmp_path / "newsletter.toml", tmp_path / "state", env)


def _sign_up(app) -> str:
    with TestClient(app) as client:
        r = client.post("/subscribe", data={"email": ADDRESS, "name": "Ann Reader", "consent": "yes"})
    assert r.status_code == 200 and "Check your inbox" in r.text
    return r.text


def _pending(tmp_path) -> str:
    store = State(tmp_path / "state").audience()
    try:
        return store.status(ADDRESS).status
    finally:
        store.close()


class Sink:
    def __init__(self):
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


def test_smtp_carries_the_confirmation(tmp_path):
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = _app(tmp_path, "smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none")
        _sign_up(app)
    finally:
        controller.stop()
    [(to, data)] = sink.received
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert to == [ADDRESS] and msg["To"] == ADDRESS
    assert "/confirm/" in msg.get_body(("plain",)).get_content()
    assert not (tmp_path / "outbox" / "_confirm").exists()
    assert _pending(tmp_path) == "pending"


def test_a_refusing_provider_gives_the_same_page_keeps_pending_and_logs_no_address(tmp_path, caplog):
    app = _app(tmp_path, "smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), SMTP_SECURITY="none")
    page = _sign_up(app)  # nothing listens on that port
    assert "We have sent a confirmation link" in page
    assert _pending(tmp_path) == "pending"
    records = [r.getMessage() for r in caplog.records if r.name == "newsletter_mailer.web.application"]
    assert any("confirmation email not sent" in m and "connection refused" in m for m in records)
    assert not any(ADDRESS in m or "confirm-reader" in m for m in caplog.messages)


def test_a_missing_credential_stops_start_up(tmp_path):
    with pytest.raises(NewsletterError, match="SENDGRID_API_KEY"):
        _app(tmp_path, "sendgrid")
    with pytest.raises(NewsletterError, match="SMTP_HOST"):
        _app(tmp_path, "smtp")


class _Capture(BaseHTTPRequestHandler):
    bodies: list[tuple[str, dict]] = []

    def log_message(self, *a):
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        _Capture.bodies.append((self.path, json.loads(raw)))
        self.send_response(202)
        self.send_header("X-Message-Id", "captured")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_sendgrid_gets_one_personalization_with_text_and_html(tmp_path, caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = _app(tmp_path, "sendgrid", SENDGRID_API_KEY="SG.capture",
                   SENDGRID_API_HOST=f"http://127.0.0.1:{server.server_port}")
        _sign_up(app)
    finally:
        server.shutdown()
    [(path, body)] = _Capture.bodies
    assert path == "/v3/mail/send"
    [p] = body["personalizations"]
    assert p["to"] == [{"email": ADDRESS}] and p["subject"].startswith("Please confirm your subscription")
    text, html = (c["value"] for c in body["content"])
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert "https://news.example.org/confirm/" in text and 'href="https://news.example.org/confirm/' in html
    assert "List-Unsubscribe" not in json.dumps(body)
    assert not any("confirmation email not sent" in m for m in caplog.messages)


def test_sendgrid_confirmation_meets_the_contract(tmp_path, caplog):
    with prism_server() as url:
        app = _app(tmp_path, "sendgrid", SENDGRID_API_KEY="SG.test", SENDGRID_API_HOST=url)
        with caplog.at_level(logging.ERROR, logger="newsletter_mailer.web.application"):
            _sign_up(app)
    assert not any("confirmation email not sent" in m for m in caplog.messages)
    assert _pending(tmp_path) == "pending"
