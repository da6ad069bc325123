"""The mailto way out, end to end (issues 11 and 12): every sent message's List-Unsubscribe
mailto carries the reader's sealed token in its subject; a reader's mail client sends that
subject to unsubscribe_mailto; `newsletter inbox` reads it and records the unsubscribe, with
the issue; the next send leaves the reader out."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import MINI_ISSUE
from newsletter_mailer.state import State

runner = CliRunner()
LIST = "email,name\nann@example.org,Ann\nbob@example.org,Bob\n"




def _send(nl: Path, issue: str):
    return runner.invoke(app, ["send", str(nl / "issues" / issue), "--config", str(nl / "newsletter.toml"),
                               "--list", str(nl / "subscribers.csv"), "--outbox", str(nl / "box"),
                               "--state", str(nl / "state"), "--yes"],
                         env={"NEWSLETTER_SECRET": "PqER62ST8UnyGuSFkxfRc-If5geL_R__2bHjGCQMH64"})


def _mailto(eml: Path) -> tuple[str, str]:
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    to = msg["To"].addresses[0].addr_spec
    link = re.search(r"<(mailto:[^>]+)>", str(msg["List-Unsubscribe"])).group(1)
    return to, link


def test_a_reply_to_the_mailto_unsubscribes_that_reader(newsletter_dir):
    nl = newsletter_dir
    (nl / "subscribers.csv").write_text(LIST, encoding="utf-8")
    assert _send(nl, "mini.yaml").exit_code == 0
    links = dict(_mailto(p) for p in (nl / "box" / "mini").glob("*.eml"))
    assert set(links) == {"ann@example.org", "bob@example.org"}
    parts = urlsplit(links["ann@example.org"])
    subject = unquote(parts.query.split("subject=", 1)[1])
    assert parts.path == "unsubscribe@example.org" and subject.startswith("unsubscribe ")
    assert "ann" not in subject and links["ann@example.org"] != links["bob@example.org"]

    reply = (f"From: Ann <ann@example.org>\r\nTo: {parts.path}\r\nSubject: {subject}\r\n"
             "Message-ID: <reply-1@example.org>\r\n\r\n\r\n").encode()
    box = mailbox.Maildir(nl / "md", create=True)
    box.add(reply)
    r = runner.invoke(app, ["inbox", "--maildir", str(nl / "md"), "--config", str(nl / "newsletter.toml"),
                            "--state", str(nl / "state")], env={"NEWSLETTER_SECRET": "PqER62ST8UnyGuSFkxfRc-If5geL_R__2bHjGCQMH64"})
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["audience", "list", "--status", "unsubscribed", "--config", str(nl / "newsletter.toml"),
                            "--state", str(nl / "state")])
    assert r.stdout.split() == ["ann@example.org"]

    store = State(nl / "state").audience()
    entry = store.status("ann@example.org")
    store.close()
    assert (entry.status, entry.source, entry.issue) == ("unsubscribed", "mailbox", "mini")

    r = runner.invoke(app, ["status", str(nl / "issues" / "mini.yaml"), "--config", str(nl / "newsletter.toml"),
                            "--state", str(nl / "state")])
    assert "readers: unsubscribed 1, bounced 0 (+0 soft), complained 0" in r.stdout

    # the next issue leaves her out
    (nl / "issues" / "next.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    r = _send(nl, "next.yaml")
    assert r.exit_code == 0, r.stderr
    assert {_mailto(p)[0] for p in (nl / "box" / "next").glob("*.eml")} == {"bob@example.org"}
