"""Through a real relay: 1,000 messages on four SMTP connections (STARTTLS) into a private Postfix
(tests/helpers/postfix.py), each delivered exactly once and, by Message-ID, byte for byte the
body the outbox writes for the same reader in the same send; the ledger on SQLite and on PostgreSQL.

The outbox copy is made from the same prepared send (one composed issue, one MIME boundary and
Date), for the same subscribers, with the Message-IDs the ledger recorded: what the relay
delivered must be what we built, not merely a message that parses.
"""

from __future__ import annotations

import os
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter_mailer.providers.outbox import OutboxProvider, filename
from newsletter_mailer.send import Options, Sender, prepare
from newsletter_mailer.subscribers import SubscriberList
from tests.helpers import postfix
from tests.test_faults import addrs, nl, state_db, write_list  # noqa: F401 - fixtures

N = 1000
# Merge values that test the path byte by byte, among ordinary readers: lines that are only a dot
# (SMTP's end of data unless dot-stuffed), very long lines, non-ASCII, CR/LF, QP's own "=",
# trailing blanks, "From " at a line start, markup.
HOSTILE = [".", ".\n.\n..\n", "x" * 3000, "Ann\u00e9e 2 \u2014 \U0001f600 \u00fcn\u00efc\u00f8d\u00e9",
           "line\r\nwith CRLF\r\n.\r\n", "=3D= =\n=", "\ttabs and trailing blanks   ", "From the start\nFrom x",
           "<script>alert(1)</script> & &amp;", ". " * 600]


@pytest.fixture
def relay():
    if not postfix.available():
        pytest.skip("postfix is not installed or not run as root: run .ci/install-system.sh as root")
    server = postfix.start(domains="example.org")
    try:
        yield server
    finally:
        server.stop()


def body(raw: bytes) -> bytes:
    """Everything after the header's blank line, in the Maildir's line endings (LF): SMTP carries
    CRLF and the Maildir stores LF, the bytes between are the same."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[1]


@pytest.mark.slow
def test_a_thousand_messages_on_four_connections_through_postfix_once_each_and_byte_identical(nl, state_db, relay,
                                                                                               monkeypatch):
    emails = addrs(N)
    write_list(nl, emails, extra={e: HOSTILE[i // 37 % len(HOSTILE)] for i, e in enumerate(emails) if i % 37 == 5})
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(relay.port))
    monkeypatch.setenv("SMTP_SECURITY", "starttls")
    monkeypatch.setenv("SMTP_CA_FILE", str(relay.ca_file))
    monkeypatch.setenv("SMTP_CONNECTIONS", "4")
    p = prepare(Options(issue=Path("issues/mini.yaml"), list_path=Path("subs.csv"), provider="smtp",
                        env=dict(os.environ)))
    sender = Sender(p)
    try:
        plan = sender.plan()
        summary = sender.run(plan)
    finally:
        sender.close()
    assert (plan.to_send, summary.sent, summary.failed) == (N, N, 0)
    ledger = p.state.ledger()
    try:
        rows = {r.email: r for r in ledger.rows("mini")}
    finally:
        ledger.close()
    assert {e: r.status for e, r in rows.items()} == {e: "sent" for e in emails}
    assert all(r.attempts == 1 for r in rows.values())
    msgid_of = {e: r.message_id for e, r in rows.items()}
    assert len(set(msgid_of.values())) == N

    files = relay.wait_delivered(N)
    log = relay.log()
    assert "status=deferred" not in log and "status=bounced" not in log, log[-2000:]
    assert relay.queue_is_empty()
    delivered: dict[str, bytes] = {}
    seen: Counter[str] = Counter()
    for path in files:
        raw = path.read_bytes()
        msg = message_from_bytes(raw, policy=policy.default)
        msgid = msg["Message-ID"]
        seen[msgid] += 1
        assert "with ESMTPS" in msg["Received"]  # each of the four connections went over STARTTLS
        # the relay's envelope recipient is the reader the ledger sent that Message-ID to
        assert msg["Delivered-To"] == rows[msg["Delivered-To"]].email and msgid_of[msg["Delivered-To"]] == msgid
        delivered[msgid] = raw
    assert len(files) == N and set(seen.values()) == {1} and set(seen) == set(msgid_of.values())

    # the outbox copy of the same send: same prepared issue, same readers, the ledger's Message-IDs
    box = OutboxProvider(p.provider.ctx)
    box.open()
    try:
        for sub in SubscriberList(Path("subs.csv")):
            r = p.recipient(sub.email, sub.name, sub.fields)
            r.message_id = msgid_of[sub.email]
            [outcome] = box.send([r])
            assert outcome.ok, outcome.error
    finally:
        box.close()
    differ = [e for e in emails
              if body((box.folder / filename(e)).read_bytes()) != body(delivered[msgid_of[e]])]
    assert differ == [], f"{len(differ)} bodies differ, first {differ[:3]}"
    # the hostile values did reach the bodies (the comparison above is over them too)
    for i in (5, 5 + 37 * 2, 5 + 37 * 3):
        text = message_from_bytes(delivered[msgid_of[emails[i]]], policy=policy.default).get_body(("plain",))
        assert HOSTILE[i // 37 % len(HOSTILE)].strip() in text.get_content(), HOSTILE[i // 37 % len(HOSTILE)][:40]
    sample = (box.folder / filename(emails[0])).read_bytes()
    assert b"Content-Type: multipart/alternative" in sample and len(body(sample)) > 1000
