"""The SMTP provider against real SMTP servers on 127.0.0.1: aiosmtpd, and a raw socket server
for the one fault aiosmtpd cannot stage (a connection dropped while the message data is
still being sent). Everything goes through the Provider interface."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import logging
import socket
import time
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.providers import Outcome as Result, Recipient, SendContext, get_provider
from newsletter_mailer.send import own_unsubscribe, send_context
from newsletter_mailer.providers.smtp import UNCERTAIN
from tests.helpers.sinks import MidDataDropServer

PW = "S3cr3t-planted-pw"
USER = "mailer"
FROM = "newsletter@example.org"

# aiosmtpd warns about AUTH without TLS; that is the point of the test servers here.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: tuple

    @property
    def msg(self):
        return email.message_from_bytes(self.content, policy=email.policy.default)


@dataclass
class Handler:
    """Stores what it receives; misbehaves on request."""

    received: list[Received] = field(default_factory=list)
    connections: int = 0
    rcpt_attempts: dict[str, int] = field(default_factory=dict)
    tempfail: dict[str, tuple[int, int]] = field(default_factory=dict)  # address -> (code, how many times)
    reject: set[str] = field(default_factory=set)                        # 550 on RCPT
    reject_data: set[str] = field(default_factory=set)                   # 554 after the data
    drop_after_data: set[str] = field(default_factory=set)               # close instead of replying, once
    hang_up_after: set[str] = field(default_factory=set)                 # reply 250, then close (idle timeout)
    die_after: set[str] = field(default_factory=set)                     # stop listening after this one
    controller: Controller | None = None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_attempts[address] = self.rcpt_attempts.get(address, 0) + 1
        if address in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        code, left = self.tempfail.get(address, (0, 0))
        if left > 0:
            self.tempfail[address] = (code, left - 1)
            if code == 421:
                asyncio.get_running_loop().call_soon(server.transport.close)
                return "421 4.3.2 Service shutting down, closing transmission channel"
            return f"{code} 4.2.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        to = list(envelope.rcpt_tos)
        if set(to) & self.reject_data:
            return "554 5.7.1 Message rejected as spam"
        self.received.append(Received(envelope.mail_from, to, bytes(envelope.content), session.peer))
        if set(to) & self.die_after:
            self.controller.server.close()  # nothing listens any more
        if set(to) & self.hang_up_after:
            asyncio.get_running_loop().call_soon(server.transport.close)
        dropping = set(to) & self.drop_after_data
        if dropping:
            self.drop_after_data -= dropping
            server.transport.abort()  # the server has the message; the reply never goes out
            return "250 OK"
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PW.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtpd():
    """Start an aiosmtpd server: smtpd(auth=False) -> (handler, port)."""
    controllers: list[Controller] = []

    def start(*, auth: bool = False) -> tuple[Handler, int, Controller]:
        handler = Handler()
        port = free_port()
        kw = {}
        if auth:
            kw = dict(authenticator=_authenticator, auth_required=True, auth_require_tls=False)
        c = Controller(handler, hostname="127.0.0.1", port=port, **kw)
        c.start()
        handler.controller = c
        handler.connections = 0  # the controller's own readiness probe does not count
        controllers.append(c)
        return handler, port, c

    yield start
    for c in controllers:
        try:
            c.stop()
        except AssertionError:  # already stopped by the test
            pass


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setenv("NEWSLETTER_BACKOFF_BASE", "0.01")


def make_ctx(composed, newsletter_dir, **env) -> SendContext:
    base = {"NEWSLETTER_BACKOFF_BASE": "0.01", "SMTP_HOST": "127.0.0.1", "SMTP_SECURITY": "none"}
    base.update({k: str(v) for k, v in env.items() if v is not None})
    for k in [k for k, v in env.items() if v is None]:
        base.pop(k, None)
    return send_context(composed, env=base)


def rcpt(composed, address: str, name: str = "", **extra) -> Recipient:
    values = composed.filler().values(address, name, extra, "https://example.org/unsubscribe?x=1")
    return Recipient(address, name, values)


def provider(composed, newsletter_dir, port, **env):
    return get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_PORT=port, **env))


def text_part(msg) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def html_part(msg) -> str:
    return msg.get_body(preferencelist=("html",)).get_content()


# -- the happy path ---------------------------------------------------------------------


def test_delivers_personalised_messages_over_one_connection(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    p = provider(composed, newsletter_dir, port)
    assert (p.name, p.batch_size, p.uncertainty, own_unsubscribe(composed.settings, p.name)) == ("smtp", 1, "message", None)
    p.open()
    results = p.send([rcpt(composed, "ann@example.org", "Ann Smith", school_year="Year 7")])
    results += p.send([rcpt(composed, "bob@example.org", "")])
    results += p.send([rcpt(composed, "cy@example.org", "Cy, Jr."), rcpt(composed, "di@example.org", "Di")])
    p.close()

    assert [r.ok for r in results] == [True] * 4
    assert all(r.message_id and r.message_id.startswith("<") and not r.error for r in results)
    assert h.connections == 1
    assert len({r.peer for r in h.received}) == 1
    assert [r.rcpt_tos for r in h.received] == [["ann@example.org"], ["bob@example.org"],
                                                 ["cy@example.org"], ["di@example.org"]]
    assert all(r.mail_from == FROM for r in h.received)

    ann = h.received[0].msg
    assert ann["To"] == "Ann Smith <ann@example.org>"
    assert ann["Subject"] == "Hello Ann Smith"
    assert ann["Message-ID"] == results[0].message_id
    assert ann.get_content_type() == "multipart/alternative"
    assert "Dear Ann Smith, welcome." in text_part(ann)
    assert "For Year 7." in text_part(ann)
    assert "Dear Ann Smith, welcome." in html_part(ann)
    assert "https://example.org/unsubscribe?x=1" in ann["List-Unsubscribe"]

    bob = h.received[1].msg
    assert bob["To"] == "bob@example.org"
    assert bob["Subject"] == "Hello friend"
    assert "Dear reader, welcome." in text_part(bob)
    assert "For all years." in text_part(bob)
    assert h.received[2].msg["To"].addresses[0].display_name == "Cy, Jr."


def test_leading_dots_survive_transparency(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    p = provider(composed, newsletter_dir, port)
    p.open()
    # a merge value starts a new (soft-broken) QP line, so ".x" puts a dot at the start of a line
    [r] = p.send([rcpt(composed, "ann@example.org", "Ann", school_year=".x")])
    p.close()
    assert r.ok
    assert b"\r\n.x=\r\n" in h.received[0].content
    assert "For .x." in text_part(h.received[0].msg)


def test_login_with_username_and_password(composed, newsletter_dir, smtpd, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="newsletter_mailer")
    h, port, _ = smtpd(auth=True)
    p = provider(composed, newsletter_dir, port, SMTP_USERNAME=USER, SMTP_PASSWORD=PW)
    p.open()
    [r] = p.send([rcpt(composed, "ann@example.org", "Ann")])
    p.close()
    assert r.ok and len(h.received) == 1
    out = capsys.readouterr()
    assert PW not in out.out + out.err + caplog.text
    assert PW not in repr(p) and PW not in repr({k: v for k, v in vars(p).items() if k != "ctx"})


# -- refusals at open(): one clear line, nothing sent, never the password --------------------


def _open_error(p) -> NewsletterError:
    with pytest.raises(NewsletterError) as ei:
        p.open()
    p.close()
    return ei.value


def test_wrong_password_is_refused_before_anything_is_sent(composed, newsletter_dir, smtpd, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="newsletter_mailer")
    h, port, _ = smtpd(auth=True)
    p = provider(composed, newsletter_dir, port, SMTP_USERNAME=USER, SMTP_PASSWORD=PW + "-wrong")
    exc = _open_error(p)
    msg = str(exc)
    assert f"127.0.0.1:{port}" in msg and "535" in msg and "SMTP_PASSWORD" in msg
    assert "\n" not in msg
    assert PW not in msg and PW not in repr(exc)
    out = capsys.readouterr()
    assert PW not in out.out + out.err + caplog.text
    assert h.received == []


def test_server_down_at_the_start(composed, newsletter_dir):
    port = free_port()  # nothing listens here
    p = provider(composed, newsletter_dir, port, SMTP_USERNAME=USER, SMTP_PASSWORD=PW)
    msg = str(_open_error(p))
    assert f"127.0.0.1:{port}" in msg and "connection refused" in msg and "SMTP_HOST" in msg
    assert PW not in msg


def test_tls_failure_is_a_clear_error(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    p = provider(composed, newsletter_dir, port, SMTP_SECURITY="ssl", SMTP_USERNAME=USER, SMTP_PASSWORD=PW)
    msg = str(_open_error(p))
    assert msg.startswith(f"TLS handshake with SMTP server 127.0.0.1:{port} failed")
    assert "SMTP_SECURITY" in msg and PW not in msg
    assert h.received == []


def test_starttls_not_offered(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    p = provider(composed, newsletter_dir, port, SMTP_SECURITY="starttls")
    msg = str(_open_error(p))
    assert f"127.0.0.1:{port} does not offer STARTTLS" in msg and "SMTP_SECURITY" in msg


def test_login_not_offered(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()  # no AUTH advertised
    p = provider(composed, newsletter_dir, port, SMTP_USERNAME=USER, SMTP_PASSWORD=PW)
    msg = str(_open_error(p))
    assert f"127.0.0.1:{port} does not offer SMTP AUTH" in msg and PW not in msg


# -- configuration ------------------------------------------------------------------------


def test_host_is_required(composed, newsletter_dir):
    with pytest.raises(NewsletterError) as ei:
        get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_HOST=None))
    assert str(ei.value) == ("SMTP_HOST is not set: export SMTP_HOST=… or set delivery.smtp.host "
                             "in newsletter.toml")


@pytest.mark.parametrize("env, needle", [
    ({"SMTP_PORT": "smtp"}, "SMTP_PORT 'smtp' is not a port number"),
    ({"SMTP_PORT": "70000"}, "out of range"),
    ({"SMTP_SECURITY": "tls"}, "SMTP_SECURITY 'tls' is not one of none, starttls, ssl"),
    ({"SMTP_PASSWORD": PW}, "SMTP_PASSWORD is set but there is no SMTP username"),
    ({"SMTP_USERNAME": USER}, f"SMTP username '{USER}' is set but SMTP_PASSWORD is not"),
    ({"NEWSLETTER_BACKOFF_BASE": "soon"}, "NEWSLETTER_BACKOFF_BASE"),
])
def test_bad_configuration(composed, newsletter_dir, env, needle):
    with pytest.raises(NewsletterError) as ei:
        get_provider("smtp", make_ctx(composed, newsletter_dir, **env))
    assert needle in str(ei.value)
    assert PW not in str(ei.value)


@pytest.mark.parametrize("security, port", [("starttls", 587), ("ssl", 465), ("none", 25), (None, 587)])
def test_default_ports(composed, newsletter_dir, security, port):
    p = get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_SECURITY=security))
    assert (p.security, p.port) == (security or "starttls", port)


def test_settings_file_is_used_after_the_environment(composed, newsletter_dir, smtpd):
    from newsletter_mailer.settings import SmtpSettings

    h, port, _ = smtpd()
    s = composed.settings
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", username=None, timeout=5)
    composed = dataclasses.replace(
        composed, settings=s.model_copy(update={"delivery": s.delivery.model_copy(update={"smtp": smtp})}))
    ctx = send_context(composed, env={"NEWSLETTER_BACKOFF_BASE": "0.01"})
    p = get_provider("smtp", ctx)
    p.open()
    assert p.send([rcpt(composed, "ann@example.org")])[0].ok
    p.close()
    assert len(h.received) == 1
    # the environment wins over the file
    ctx.env["SMTP_PORT"] = "1"
    assert get_provider("smtp", ctx).port == 1


# -- per-recipient failures ------------------------------------------------------------------


def test_permanent_refusal_goes_on_with_the_next(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.reject.add("gone@example.org")
    h.reject_data.add("spam@example.org")
    p = provider(composed, newsletter_dir, port)
    p.open()
    results = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "gone@example.org"),
                      rcpt(composed, "spam@example.org"), rcpt(composed, "bob@example.org")])
    p.close()
    ann, gone, spam, bob = results
    assert ann.ok and bob.ok
    assert gone == Result("gone@example.org", ok=False, permanent=True,
                          error="550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown")
    assert spam == Result("spam@example.org", ok=False, permanent=True, error="554 5.7.1 Message rejected as spam")
    assert h.rcpt_attempts["gone@example.org"] == 1  # never retried
    assert [r.rcpt_tos for r in h.received] == [["ann@example.org"], ["bob@example.org"]]
    assert h.connections == 1


def test_unsafe_header_value_fails_that_recipient_only(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    p = provider(composed, newsletter_dir, port)
    p.open()
    bad, good = p.send([rcpt(composed, "eve@example.org", "Eve\r\nBcc: x@example.org"),
                        rcpt(composed, "ann@example.org", "Ann")])
    p.close()
    assert bad.ok is False and bad.permanent and "line break" in bad.error
    assert good.ok and [r.rcpt_tos for r in h.received] == [["ann@example.org"]]


def test_temporary_failures_are_retried_with_backoff(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.tempfail["ann@example.org"] = (451, 2)
    h.tempfail["bob@example.org"] = (452, 4)
    p = provider(composed, newsletter_dir, port)
    p.open()
    t0 = time.monotonic()
    ann, bob = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "bob@example.org")])
    elapsed = time.monotonic() - t0
    p.close()
    assert ann.ok and bob.ok
    assert h.rcpt_attempts == {"ann@example.org": 3, "bob@example.org": 5}
    assert len(h.to("ann@example.org")) == 1 and len(h.to("bob@example.org")) == 1
    assert h.connections == 1
    # 0.01 + 0.02 for ann, 0.01 + 0.02 + 0.04 + 0.08 for bob
    assert 0.18 <= elapsed < 5


def test_temporary_failure_gives_up_after_five_attempts(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.tempfail["ann@example.org"] = (450, 99)
    p = provider(composed, newsletter_dir, port)
    p.open()
    ann, bob = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "bob@example.org")])
    p.close()
    assert ann.ok is False and ann.permanent is False and ann.uncertain is False
    assert ann.error.startswith("450 4.2.0 Try again later")
    assert h.rcpt_attempts["ann@example.org"] == 5
    assert bob.ok and h.to("ann@example.org") == []


def test_421_reconnects_before_retrying(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.tempfail["ann@example.org"] = (421, 1)
    p = provider(composed, newsletter_dir, port)
    p.open()
    ann, bob = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "bob@example.org")])
    p.close()
    assert ann.ok and bob.ok
    assert h.rcpt_attempts["ann@example.org"] == 2
    assert h.connections == 2
    assert len(h.to("ann@example.org")) == 1


# -- lost connections ----------------------------------------------------------------------


def test_drop_after_the_data_is_uncertain_and_never_retried(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.drop_after_data.add("bob@example.org")
    p = provider(composed, newsletter_dir, port)
    p.open()
    ann, bob, cy = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "bob@example.org"),
                           rcpt(composed, "cy@example.org")])
    p.close()
    assert ann.ok and cy.ok
    assert bob == Result("bob@example.org", ok=False, uncertain=True, error=UNCERTAIN)
    assert bob.error == "connection lost after the message was sent; delivery unknown"
    assert len(h.to("bob@example.org")) == 1  # the server got it exactly once: no duplicate
    assert h.rcpt_attempts["bob@example.org"] == 1
    assert h.connections == 2  # reconnected for cy


def test_server_drops_an_idle_connection_between_messages(composed, newsletter_dir, smtpd):
    h, port, _ = smtpd()
    h.hang_up_after.add("ann@example.org")
    p = provider(composed, newsletter_dir, port)
    p.open()
    assert p.send([rcpt(composed, "ann@example.org")])[0].ok
    time.sleep(0.05)
    assert p.send([rcpt(composed, "bob@example.org")])[0].ok
    p.close()
    assert [r.rcpt_tos for r in h.received] == [["ann@example.org"], ["bob@example.org"]]
    assert h.connections == 2


def test_server_going_down_mid_send_stops_the_send(composed, newsletter_dir, smtpd, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="newsletter_mailer")
    h, port, c = smtpd(auth=True)
    p = provider(composed, newsletter_dir, port, SMTP_USERNAME=USER, SMTP_PASSWORD=PW)
    p.open()
    assert p.send([rcpt(composed, "ann@example.org")])[0].ok
    c.stop()
    t0 = time.monotonic()
    with pytest.raises(NewsletterError) as ei:
        p.send([rcpt(composed, "bob@example.org")])
    assert time.monotonic() - t0 < 5
    p.close()
    msg = str(ei.value)
    assert f"127.0.0.1:{port}" in msg and "could not reconnect" in msg and "bob@example.org" in msg
    assert PW not in msg
    out = capsys.readouterr()
    assert PW not in out.out + out.err + caplog.text
    assert [r.rcpt_tos for r in h.received] == [["ann@example.org"]]


def test_server_going_down_mid_batch_reports_what_went_out(composed, newsletter_dir, smtpd):
    h, port, c = smtpd()
    h.drop_after_data.add("bob@example.org")
    p = provider(composed, newsletter_dir, port)
    h.die_after.add("bob@example.org")
    p.open()
    ann, bob, cy = p.send([rcpt(composed, "ann@example.org"), rcpt(composed, "bob@example.org"),
                           rcpt(composed, "cy@example.org")])
    p.close()
    assert ann.ok
    assert bob.uncertain and not bob.ok
    assert cy.ok is False and cy.permanent is False and cy.uncertain is False
    assert "could not reconnect" in cy.error
    assert h.to("cy@example.org") == []


def test_drop_while_the_data_is_being_sent_is_retried(composed, newsletter_dir):
    server = MidDataDropServer()
    try:
        p = provider(composed, newsletter_dir, server.port)
        p.open()
        big = "lorem ipsum " * 400_000  # ~5 MB per part: far more than the socket buffers hold
        [r] = p.send([rcpt(composed, "ann@example.org", "Ann", school_year=big)])
        p.close()
    finally:
        server.stop()
    assert r.ok and not r.uncertain, r
    assert server.partial_bytes == 20000
    assert server.connections == 2
    assert len(server.messages) == 1  # exactly one complete copy
    msg = email.message_from_bytes(server.messages[0], policy=email.policy.default)
    assert msg["To"] == "Ann <ann@example.org>"
    assert text_part(msg).count("lorem ipsum") == 400_000
