"""One state for every command: on PostgreSQL no command makes or reads a SQLite file, and what
one command records (a bounce from the inbox, an unsubscribe through `newsletter serve`, a
SendGrid spam report, a sign-up) is what every other command sees — status, report, the
audience list and the next issue's send. The same run on SQLite keeps everything in the folder."""

from __future__ import annotations

import email
import mailbox
import re
import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer import tokens
from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state import State
from newsletter_mailer.state.db import URL_ENV
from tests.conftest import MINI_ISSUE, isolated_newsletter
from tests.helpers import webserver
from tests.helpers.sendgrid_api import KEY, FakeSendGrid, serve

READERS = ("ann", "bob", "cat", "dan", "eve", "fay")


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


def _bounce_for(address: str, message_id: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nTo: news@example.org\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.net>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {address}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n"
            f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@example.org\r\nTo: {address}\r\n"
            f"Message-ID: {message_id}\r\n\r\n--B--\r\n").encode()


def _sent_to(outbox: Path) -> dict[str, email.message.Message]:
    from email.utils import parseaddr

    messages = (email.message_from_bytes(p.read_bytes()) for p in outbox.glob("*.eml"))
    return {parseaddr(m["To"])[1]: m for m in messages}


def _database_files(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if ".sqlite3" in p.name]


@pytest.fixture
def fake_sendgrid():
    fake = FakeSendGrid({"/v3/suppression/spam_reports": [{"created": 1_700_000_000, "email": "ann@example.org",
                                                           "ip": "192.0.2.1"}]})
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


def test_every_command_reads_and_writes_the_one_state(tmp_path, monkeypatch, database_url, fake_sendgrid):
    nl = isolated_newsletter(tmp_path, monkeypatch, webserver.SECRET)
    if database_url is not None:
        monkeypatch.setenv(URL_ENV, database_url)
    state_dir = nl / ".newsletter"
    (nl / "subscribers.csv").write_text("email,name\n" + "".join(f"{r}@example.org,{r.title()}\n" for r in READERS))

    # send, test-send, status, cancel: the ledger
    _ok("send", "issues/mini.yaml", "--list", "subscribers.csv", "--yes")
    first = _sent_to(nl / "outbox" / "mini")
    assert set(first) == {f"{r}@example.org" for r in READERS}
    _ok("test-send", "issues/mini.yaml", "--to", "me@example.org")
    assert "sent" in _ok("status", "issues/mini.yaml")
    _ok("cancel", "issues/mini.yaml")

    # inbox: a bounce tied to bob's message by the ledger's Message-ID
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    box.add(_bounce_for("bob@example.org", first["bob@example.org"]["Message-ID"]))
    box.flush()
    assert "1 bounced" in _ok("inbox", "--mbox", str(tmp_path / "bounces.mbox"))

    # audience …: suppress, unsuppress, export, import, sync (ann's spam report at SendGrid)
    _ok("audience", "suppress", "cat@example.org", "dan@example.org")
    _ok("audience", "unsuppress", "dan@example.org")
    (tmp_path / "left.csv").write_text("email,status\ndan@example.org,unsubscribed\n")
    _ok("audience", "import", str(tmp_path / "left.csv"))
    monkeypatch.setenv("SENDGRID_API_KEY", KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", fake_sendgrid.url)
    _ok("audience", "sync")
    _ok("audience", "export", str(tmp_path / "export.csv"), "--list", "subscribers.csv")

    # serve: one-click for eve, a sign-up confirmed by new@, on the same state
    server = webserver.start(tmp_path / "web", state=state_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = tokens.make_unsubscribe(server.secret, server.list_id, "eve@example.org", "mini")
            assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
            assert client.post("/subscribe", data={"email": "new@example.org", "consent": "yes"}).status_code == 200
            [mail] = server.mails_to("new@example.org")
            body = mail.get_payload()[0].get_payload(decode=True).decode()
            link = re.search(r"/confirm/[A-Za-z0-9_-]+", body).group()
            assert client.post(link, data={"confirm": "yes"}).status_code == 200
    finally:
        webserver.stop(server)

    # every reader of the state sees the same thing
    listed = {s: set(_ok("audience", "list", "--status", s).split()) for s in
              ("bounced", "complained", "unsubscribed", "subscribed")}
    assert {"bob@example.org"} <= listed["bounced"]
    assert {"ann@example.org"} <= listed["complained"]
    assert {"cat@example.org", "dan@example.org", "eve@example.org"} <= listed["unsubscribed"]
    assert "new@example.org" in listed["subscribed"]
    report = _ok("report", "issues/mini.yaml")
    assert re.search(r"sent\s*│\s*6 ", report) and re.search(r"unsubscribes\s*│\s*1 ", report), report
    assert re.search(r"hard bounces\s*│\s*1 ", report), report
    assert "readers: unsubscribed 1, bounced 1 (+0 soft)" in _ok("status", "issues/mini.yaml")
    _ok("report")
    _ok("state", "init")

    # the next issue skips exactly the suppressed and adds the confirmed sign-up
    (nl / "issues" / "next.yaml").write_text(MINI_ISSUE.replace("2020-09-01", "2020-10-01"))
    _ok("send", "issues/next.yaml", "--list", "subscribers.csv", "--yes")
    assert set(_sent_to(nl / "outbox" / "next")) == {"fay@example.org", "new@example.org"}

    if database_url is not None:
        assert _database_files(state_dir, tmp_path / "web") == []
        assert (state_dir / "ledger.sqlite3").exists() is False
    else:
        assert {p.name for p in _database_files(state_dir)} >= {"ledger.sqlite3", "audience.sqlite3"}


def test_state_copy_reads_its_sqlite_source_and_writes_only_the_database(tmp_path, monkeypatch, pg_cluster):
    nl = isolated_newsletter(tmp_path, monkeypatch, webserver.SECRET)
    source = tmp_path / "old-state"
    store = State(source).audience()
    store.db.execute("INSERT INTO audience (email, status, source, updated_at) "
                     "VALUES ('old@example.org', 'unsubscribed', 'cli', 'x')")
    store.close()
    url = pg_cluster.new_database()
    assert "verified" in _ok("state", "copy", "--to", url, "--state", str(source))
    monkeypatch.setenv(URL_ENV, url)
    assert "old@example.org" in _ok("audience", "list", "--status", "unsubscribed")
    assert _database_files(nl / ".newsletter") == []


def test_the_state_is_resolved_once_and_no_store_takes_an_optional_url(tmp_path):
    """The constructors take an opened database: the URL cannot be left out by a caller."""
    import inspect

    from newsletter_mailer.audience.store import Audience
    from newsletter_mailer.ledger import Ledger

    for cls in (Ledger, Audience):
        assert list(inspect.signature(cls).parameters) == ["db"]
    env = {URL_ENV: "postgresql://news@db.example.org/news"}
    state = State.resolve(None, tmp_path, env)
    assert state.postgres and state.folder == tmp_path / ".newsletter"
    assert "db.example.org:5432/news" in state.describe() and "news@" not in repr(state)
    with pytest.raises(NewsletterError, match="--state"):
        State.resolve(None, None, {})


def test_the_web_app_and_the_cli_agree_on_the_database(tmp_path, monkeypatch, pg_cluster):
    """`newsletter serve` with only the environment naming the database writes there, not to a file."""
    url = pg_cluster.new_database()
    from newsletter_mailer.state.migrations import init_database

    init_database(url)
    monkeypatch.setenv(URL_ENV, url)
    server = webserver.start(tmp_path / "web")
    try:
        token = tokens.make_unsubscribe(server.secret, server.list_id, "zed@example.org", "mini")
        assert httpx.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    finally:
        webserver.stop(server)
    store = State(tmp_path, url).audience()
    try:
        assert store.status("zed@example.org").status == "unsubscribed"
    finally:
        store.close()
    assert _database_files(tmp_path / "web") == []
    shutil.rmtree(tmp_path / "web")
