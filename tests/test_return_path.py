"""[delivery] return_path and verp: the envelope sender of every SMTP and outbox message, per
reader with VERP, and a Postfix bounce to that address tied to its reader by `newsletter inbox`."""

from __future__ import annotations

import email
import email.policy
import mailbox
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from newsletter_mailer import tokens
from newsletter_mailer.cli import app
from tests.helpers.sinks import free_port
from newsletter_mailer.state import State

SECRET = "MMfBr9focHcT8OhuigxJotxM6njKhzkDKOwO-KGpZDk"
READERS = ["ann@example.com", "bob@example.net", "cat@example.com"]
runner = CliRunner()


def with_delivery(folder: Path, *lines: str) -> None:
    toml = folder / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(text.replace("[delivery]\n", "[delivery]\n" + "".join(f"{l}\n" for l in lines)),
                    encoding="utf-8")


@pytest.fixture
def nl(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (newsletter_dir / "list.csv").write_text("email,name\n" + "".join(f"{a},{a[:3]}\n" for a in READERS),
                                             encoding="utf-8")
    return newsletter_dir


def reader_of(settings_dir: Path, address: str) -> tuple[str, str | None] | None:
    """Whom a bounces+<token>@ address names, read as `newsletter inbox` reads it."""
    from newsletter_mailer.settings import load_settings

    settings = load_settings(settings_dir / "newsletter.toml")[0]
    local = address.split("@", 1)[0]
    assert local.startswith("bounces+"), address
    from newsletter_mailer.listid import stable_id

    return tokens.read_unsubscribe(SECRET.encode(), stable_id(settings.list_id_header), local[len("bounces+"):])


# -- settings and check --------------------------------------------------------------------------

@pytest.mark.parametrize("lines, needle", [
    (['verp = true'], "needs a return_path"),
    (['return_path = "returns@example.org"', 'verp = true'], "local part to be 'bounces'"),
    (['return_path = "bounces+x@example.org"', 'verp = true'], "local part to be 'bounces'"),
    (['return_path = "not an address"'], "delivery.return_path"),
    (['return_path = "bounces@example.org\\r\\nBcc: x@example.net"'], "delivery.return_path"),
    (['return_path = "=?utf-8?q?bounces=0D=0A@example.org?="'], "delivery.return_path"),
])
def test_bad_return_path_settings_are_one_line_exit_2(nl, lines, needle):
    with_delivery(nl, *lines)
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 2, r.output
    out = r.output.strip().splitlines()
    assert len(out) == 1 and "newsletter.toml" in out[0] and needle in out[0], r.output
    assert "Traceback" not in r.output and not (nl / "outbox").exists()


def test_check_warns_when_the_return_path_is_on_another_domain(nl):
    with_delivery(nl, 'return_path = "bounces@mailer.example.net"')
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    warned = [l for l in r.output.splitlines() if "return_path" in l]
    assert len(warned) == 1, r.output
    assert "example.net" in warned[0] and "DMARC" in warned[0] and "bounces@example.org" in warned[0]


@pytest.mark.parametrize("address", ["bounces@example.org", "bounces@mail.example.org"])
def test_check_is_quiet_for_an_aligned_return_path(nl, address):
    """Same domain, or a subdomain (DMARC's default relaxed alignment): nothing to warn about."""
    with_delivery(nl, f'return_path = "{address}"')
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code == 0, r.output
    assert "return_path" not in r.output


def test_return_path_can_be_raised_to_an_error(nl):
    with_delivery(nl, 'return_path = "bounces@example.net"')
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text() + '\n[checks]\nwarnings_as_errors = ["return-path"]\n')
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code != 0 and "return_path" in r.output, r.output


# -- the outbox ----------------------------------------------------------------------------------

def _emls(folder: Path) -> dict[str, email.message.Message]:
    out = {}
    for p in folder.glob("*.eml"):
        msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        out[msg["To"].addresses[0].addr_spec] = msg
    return out


def test_outbox_messages_carry_the_return_path(nl):
    with_delivery(nl, 'return_path = "bounces@example.org"')
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    msgs = _emls(nl / "outbox" / "mini")
    assert sorted(msgs) == sorted(READERS)
    for m in msgs.values():
        assert m.get_all("Return-Path") == ["<bounces@example.org>"]
        assert m["From"].addresses[0].addr_spec == "newsletter@example.org"  # From is untouched


def test_without_return_path_the_outbox_is_as_before(nl):
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    assert all("Return-Path" not in m for m in _emls(nl / "outbox" / "mini").values())


@pytest.mark.parametrize("mailto", [True, False], ids=["with-mailto", "without-mailto"])
def test_outbox_verp_names_each_reader(nl, mailto):
    """Every message's Return-Path is bounces+<token>@ with its own reader's token and the issue;
    also when nothing else needs the sealed token (no unsubscribe_mailto)."""
    if not mailto:
        toml = nl / "newsletter.toml"
        toml.write_text(toml.read_text().replace('unsubscribe_mailto = "unsubscribe@example.org"\n', ""))
    with_delivery(nl, 'return_path = "bounces@example.org"', "verp = true")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    msgs = _emls(nl / "outbox" / "mini")
    assert sorted(msgs) == sorted(READERS)
    for rcpt, m in msgs.items():
        [rp] = m.get_all("Return-Path")
        address = rp.strip("<>")
        assert address.endswith("@example.org")
        assert reader_of(nl, address) == (rcpt, "mini")


def test_test_send_to_the_outbox_has_the_testers_verp_address(nl):
    with_delivery(nl, 'return_path = "bounces@example.org"', "verp = true")
    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--to", "editor@example.org"])
    assert r.exit_code == 0, r.output
    [p] = (nl / "outbox" / "mini" / "test").glob("*.eml")
    msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
    assert reader_of(nl, msg["Return-Path"].strip("<>")) == ("editor@example.org", "mini")


# -- SMTP ----------------------------------------------------------------------------------------

@dataclass
class Envelopes:
    """An aiosmtpd handler that keeps each message's envelope."""

    got: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):
        self.got.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 OK"


@pytest.fixture
def smtp(nl, monkeypatch):
    handler, port = Envelopes(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    for k, v in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SMTP_USERNAME", raising=False)
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    yield handler
    controller.stop()


def test_smtp_mail_from_is_from_email_by_default(smtp):
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--provider", "smtp", "--yes"])
    assert r.exit_code == 0, r.output
    assert sorted(rc[0] for _, rc, _ in smtp.got) == sorted(READERS)
    assert {mail_from for mail_from, _, _ in smtp.got} == {"newsletter@example.org"}


def test_smtp_mail_from_is_the_return_path(smtp):
    with_delivery(Path.cwd(), 'return_path = "bounces@example.org"')
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--provider", "smtp", "--yes"])
    assert r.exit_code == 0, r.output
    assert sorted(rc[0] for _, rc, _ in smtp.got) == sorted(READERS)
    assert {mail_from for mail_from, _, _ in smtp.got} == {"bounces@example.org"}
    for _, _, content in smtp.got:  # the receiving server writes Return-Path from MAIL FROM (RFC 5321 4.4)
        assert b"\r\nReturn-Path:" not in b"\r\n" + content.split(b"\r\n\r\n", 1)[0]


def test_smtp_verp_mail_from_names_each_reader(smtp):
    with_delivery(Path.cwd(), 'return_path = "bounces@example.org"', "verp = true")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--provider", "smtp", "--yes"])
    assert r.exit_code == 0, r.output
    assert sorted(rc[0] for _, rc, _ in smtp.got) == sorted(READERS)
    senders = set()
    for mail_from, [rcpt], _ in smtp.got:
        assert mail_from.startswith("bounces+") and mail_from.endswith("@example.org")
        assert reader_of(Path.cwd(), mail_from) == (rcpt, "mini")
        senders.add(mail_from)
    assert len(senders) == len(READERS)


def test_smtp_test_send_uses_the_return_path(smtp):
    with_delivery(Path.cwd(), 'return_path = "bounces@example.org"', "verp = true")
    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--provider", "smtp", "--to", "editor@example.org"])
    assert r.exit_code == 0, r.output
    [(mail_from, rcpts, _)] = smtp.got
    assert rcpts == ["editor@example.org"]
    assert reader_of(Path.cwd(), mail_from) == ("editor@example.org", "mini")


def test_sendgrid_ignores_the_return_path_with_one_note(nl, monkeypatch):
    from newsletter_mailer.send import Options, prepare

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.not-a-real-key")
    with_delivery(nl, 'return_path = "bounces@example.org"', "verp = true")
    p = prepare(Options(issue=Path("issues/mini.yaml"), provider="sendgrid", dry_run=True))
    notes = [n for n in p.notes if "return_path" in n]
    assert len(notes) == 1 and "SendGrid" in notes[0], p.notes


# -- a Postfix bounce to the VERP address --------------------------------------------------------

def postfix_dsn(verp: str, rcpt: str, *, queue_id: str = "4Xk2Lp1ZQbz9sWS") -> bytes:
    """A bounce as Postfix 3.x's bounce(8) writes it: multipart/report, its X-Postfix-* fields,
    the returned message's headers (text/rfc822-headers) with no Message-ID of ours in them."""
    return f"""\
Return-Path: <>
X-Original-To: {verp}
Delivered-To: {verp}
Received: by mx.example.org (Postfix)
	id {queue_id}; Mon,  7 Dec 2026 09:00:05 +0000 (UTC)
Date: Mon,  7 Dec 2026 09:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="{queue_id}.1765098005/mx.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <20261207090005.{queue_id}@mx.example.org>

This is a MIME-encapsulated message.

--{queue_id}.1765098005/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<{rcpt}>: host mail.example.net[192.0.2.25] said: 550 5.1.1
    <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox
    table (in reply to RCPT TO command)

--{queue_id}.1765098005/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: {queue_id}
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Mon,  7 Dec 2026 09:00:01 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.net
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User
    unknown in virtual mailbox table

--{queue_id}.1765098005/mx.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Received: from sender.example.org (sender.example.org [192.0.2.10])
	by mx.example.org (Postfix) with ESMTP id {queue_id}
	for <{rcpt}>; Mon,  7 Dec 2026 09:00:01 +0000 (UTC)
From: CSCP Newsletter <newsletter@example.org>
To: {rcpt}
Subject: Hello

--{queue_id}.1765098005/mx.example.org--
""".replace("\n", "\r\n").encode()


def test_a_postfix_bounce_to_the_verp_address_is_matched_to_its_reader(nl):
    """Sent with VERP to the outbox; a Postfix DSN for one reader comes back to that reader's
    return path (no Message-ID of ours in it): `newsletter inbox` marks exactly that reader bounced.
    Among it: a DSN to a forged bounces+ address, and one naming another reader sent to the
    first reader's address (the VERP address decides, not what the report says)."""
    with_delivery(nl, 'return_path = "bounces@example.org"', "verp = true")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    verp = {rcpt: m["Return-Path"].strip("<>") for rcpt, m in _emls(nl / "outbox" / "mini").items()}

    forged = "bounces+" + "A" * 60 + "@example.org"
    box = mailbox.mbox(nl / "bounces.mbox")
    box.add(postfix_dsn(forged, "cat@example.com", queue_id="4Xk2Lp1ZQbz9sAA"))
    box.add(postfix_dsn(verp["bob@example.net"], "bob@example.net"))
    box.add(b"From: someone@example.com\r\nTo: bounces@example.org\r\nSubject: hello\r\n\r\nhi\r\n")
    box.flush()
    box.close()

    r = runner.invoke(app, ["inbox", "--mbox", "bounces.mbox"])
    assert r.exit_code == 0, r.output
    assert "1 bounced (permanent)" in r.output and "1 unmatched" in r.output, r.output


    store = State(nl / ".newsletter").audience()
    try:
        status = {a: getattr(store.status(a), "status", None) for a in READERS}
    finally:
        store.close()
    assert status["bob@example.net"] == "bounced", status
    assert status["ann@example.com"] != "bounced" and status["cat@example.com"] != "bounced", status

    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert "nothing to send" in r.output, r.output  # and bob was never anyone's second message
