"""The whole reader loop, on each backend, with the real parts: a send to the outbox with a VERP
return path; a one-click unsubscribe through the real server; a signed SendGrid batch with events
for two unsubscribe groups and one the store cannot hold; a real Dovecot mailbox holding a Postfix
bounce to a VERP address, an ARF complaint, a mailto unsubscribe with its token, an auto-reply, a
human note, a forged report and the messages no parser can read; `newsletter inbox --imap`. Then
`status`, `report` and `audience list` agree, and the next issue skips exactly the suppressed."""

from __future__ import annotations

import email
import json
import re
import time
import uuid
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.state.db import URL_ENV
from newsletter_mailer.web.webhook import KEY_VAR
from tests.conftest import MINI_ISSUE, isolated_newsletter
from tests.helpers import dovecot, webserver
from tests.test_inbox import CORPUS, _dsn
from tests.test_inbox_odd import ODD
from tests.test_webhook import KEY, public_b64, signed

READERS = [f"r{i}@example.org" for i in range(10)]
GROUP = 7


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


def _sent(outbox: Path) -> dict[str, email.message.Message]:
    messages = (email.message_from_bytes(p.read_bytes()) for p in outbox.glob("*.eml"))
    return {parseaddr(m["To"])[1]: m for m in messages}


def _mailbox(sent: dict[str, email.message.Message]) -> list[bytes]:
    """What comes back to the bounce address after the send, good and bad mixed."""
    def verp(who: str) -> str:
        return parseaddr(sent[who]["Return-Path"])[1]

    postfix = f"Delivered-To: {verp('r6@example.org')}\r\n".encode() + _dsn("r6@example.org", "5.1.1", "<not-ours@x>")
    arf = (CORPUS / "rfc5965_arf.eml").read_bytes().replace(b"user@example.com", b"r7@example.org").replace(
        b"8787KJKJ3K4J3K4J3K4J3.mail@example.net", sent["r7@example.org"]["Message-ID"].strip("<>").encode())
    mailto = re.search(r"<mailto:([^?]+)\?subject=([^>]+)>", sent["r8@example.org"]["List-Unsubscribe"])
    unsubscribe = (f"From: R8 <r8@example.org>\r\nTo: {mailto.group(1)}\r\nSubject: {unquote(mailto.group(2))}\r\n"
                   f"Message-ID: <u8@example.org>\r\n\r\nplease remove me\r\n").encode()
    autoreply = f"Delivered-To: {verp('r9@example.org')}\r\n".encode() + (
        CORPUS / "autoreply_out_of_office.eml").read_bytes()
    human = (f"Delivered-To: {verp('r9@example.org')}\r\nFrom: A Colleague <colleague@example.net>\r\n"
             f"To: {verp('r9@example.org')}\r\nSubject: Re: the September issue\r\n"
             f"Message-ID: <human@example.net>\r\n\r\nThanks, forwarded to the team.\r\n").encode()
    forged = _dsn("r0@example.org", "5.1.1", "<forged@nowhere>")  # names r0, tied to nothing of ours
    return [postfix, ODD["no_from"][0], arf, ODD["nested_1000"][0], unsubscribe, autoreply, human,
            ODD["utf8_from"][0], forged, ODD["empty"][0]]


def _events() -> bytes:
    now = int(time.time())
    events = [
        {"event": "spamreport", "email": "r3@example.org", "issue": "mini"},
        {"event": "group_unsubscribe", "email": "r4@example.org", "issue": "mini", "asm_group_id": 999},
        {"event": "bounce", "type": "bounce", "email": "bad\u0000@example.org", "issue": "mini"},
        {"event": "delivered", "email": "r2@example.org", "issue": "mini", "timestamp": 2**70},
        {"event": "group_unsubscribe", "email": "r5@example.org", "issue": "mini", "asm_group_id": GROUP},
    ]
    return json.dumps([{"sg_event_id": uuid.uuid4().hex, "timestamp": now, **e} for e in events]).encode()


@pytest.fixture
def imap(tmp_path):
    server = dovecot.start(tmp_path / "dovecot")
    yield server
    server.stop()


def test_the_reader_loop_never_breaks(tmp_path, monkeypatch, database_url, imap):
    nl = isolated_newsletter(tmp_path, monkeypatch, webserver.SECRET)
    if database_url is not None:
        monkeypatch.setenv(URL_ENV, database_url)
    settings = (nl / "newsletter.toml").read_text()
    settings = settings.replace("[delivery]\n", '[delivery]\nreturn_path = "bounces@example.org"\nverp = true\n', 1)
    settings = settings.replace("[delivery.sendgrid]\n", f"[delivery.sendgrid]\nasm_group_id = {GROUP}\n", 1)
    (nl / "newsletter.toml").write_text(settings)
    (nl / "subscribers.csv").write_text("email,name\n" + "".join(f"{r},{r[:2].upper()}\n" for r in READERS))

    _ok("send", "issues/mini.yaml", "--list", "subscribers.csv", "--yes")
    sent = _sent(nl / "outbox" / "mini")
    assert set(sent) == set(READERS)
    assert all(parseaddr(m["Return-Path"])[1].startswith("bounces+") for m in sent.values())

    monkeypatch.setenv(KEY_VAR, public_b64(KEY))
    server = webserver.start(tmp_path / "web", state=nl / ".newsletter",
                             edit=lambda text: text.replace("[delivery.sendgrid]\n",
                                                            f"[delivery.sendgrid]\nasm_group_id = {GROUP}\n", 1))
    try:
        one_click = re.search(r"<(https?://[^>]+/u/([^>]+))>", sent["r1@example.org"]["List-Unsubscribe"]).group(2)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post(f"/u/{one_click}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            body = _events()
            answer = client.post("/hooks/sendgrid", content=body, headers=signed(body))
            assert answer.status_code in (200, 204), answer.text
    finally:
        webserver.stop(server)
    assert "Traceback" not in server.log.read_text()

    c = imap.client()
    for raw in _mailbox(sent):
        assert c.append("INBOX", None, None, raw)[0] == "OK"
    c.logout()
    out = _ok("inbox", "--imap", env=imap.env())
    assert "1 bounced" in out and "1 complaint" in out and "1 unsubscribe" in out, out
    assert "unreadable" in out and "1 unmatched" in out, out

    listed = {s: set(_ok("audience", "list", "--status", s).split()) & set(READERS)
              for s in ("bounced", "complained", "unsubscribed")}
    assert listed == {"bounced": {"r6@example.org"}, "complained": {"r3@example.org", "r7@example.org"},
                      "unsubscribed": {"r1@example.org", "r5@example.org", "r8@example.org"}}
    assert "readers: unsubscribed 3, bounced 1 (+0 soft), complained 2" in _ok("status", "issues/mini.yaml")
    report = _ok("report", "issues/mini.yaml")
    for label, n in (("unsubscribes", 3), ("hard bounces", 1), ("complaints", 2)):
        assert re.search(rf"{label}\s*│\s*{n} ", report), (label, report)

    (nl / "issues" / "next.yaml").write_text(MINI_ISSUE.replace("2020-09-01", "2020-10-01"))
    _ok("send", "issues/next.yaml", "--list", "subscribers.csv", "--yes")
    assert set(_sent(nl / "outbox" / "next")) == {"r0@example.org", "r2@example.org", "r4@example.org",
                                                  "r9@example.org"}
