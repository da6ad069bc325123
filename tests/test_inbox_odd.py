"""`newsletter inbox` always finishes (issue 18): odd messages among genuine reports.

A reply whose From is raw UTF-8, a message with no From, a report with an 8-bit field, parts
nested a thousand deep, an empty message: each is read on its own. What the parsers cannot
read is counted unreadable, named under --verbose, never flagged, moved or remembered, and the
run goes on; the genuine reports around it are recorded. On an mbox, a Maildir and a real
Dovecot; the store on SQLite and PostgreSQL. Also the inbound VERP rule and the IMAP settings.
"""

from __future__ import annotations

import mailbox
import re
from pathlib import Path

import pytest

from newsletter_mailer import tokens
from newsletter_mailer.audience import bounces
from newsletter_mailer.audience.bounces import Classifier, MessageIndex
from newsletter_mailer.audience.inbox import classifier_for, run
from newsletter_mailer.audience.mailbox import FileSource, ImapSource
from newsletter_mailer.audience.store import Audience
from tests.test_inbox import (CORPUS, SECRET, _append, _dsn, _flags, _maildir, _run, _token, _tree,  # noqa: F401
                              env, imap)


def nested(depth: int, rfc822: bool = False) -> bytes:
    """A message whose parts nest depth levels deep (multipart, or message/rfc822 in each other)."""
    if rfc822:
        inner = b"From: someone@example.net\r\nSubject: inner\r\n\r\nhello\r\n"
        for _ in range(depth):
            inner = b"From: someone@example.net\r\nContent-Type: message/rfc822\r\n\r\n" + inner
        return inner
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return (b"From: someone@example.net\r\nTo: news@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
            + opening + b"Content-Type: text/plain\r\n\r\nhi" + closing)


# name -> (message, what it is classified as). Unreadable: the parsers cannot read it.
ODD = {
    "utf8_from": ("From: Jörg Müller <jörg@exämple.de>\r\nTo: news@example.org\r\nSubject: Grüße\r\n"
                  "Message-ID: <utf8@example.de>\r\n\r\nDanke!\r\n".encode(), "unrecognised"),
    "no_from": (b"To: news@example.org\r\nSubject: no sender\r\n\r\nwho am I\r\n", "unreadable"),
    "nested_1000": (nested(1000), "unreadable"),
    "nested_rfc822_1000": (nested(1000, rfc822=True), "unreadable"),
    "empty": (b"\r\n", "unreadable"),
    "undecodable_header": (b"From: =?x-unknown?b?!!!?= <odd@example.net>\r\nTo: news@example.org\r\n"
                           b"Subject: =?utf-8?q?=FF=FE=C3?=\r\nContent-Type: text/plain; charset=x-nope\r\n"
                           b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n", "unrecognised"),
}
UNREADABLE = sorted(n for n, (_, kind) in ODD.items() if kind == "unreadable")


def _verp(settings, email: str, raw: bytes) -> bytes:
    """raw as delivered to the VERP address of email's reader: tied to our mail by the token
    (an mbox "From " line, which some corpus files start with, is not a header: dropped)."""
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1]
    return f"Delivered-To: bounces+{_token(settings, email, '2020-09')}@example.org\r\n".encode() + raw


def _genuine(settings) -> dict[str, tuple[bytes, str, str]]:
    """name -> (message, whom it names, the status it records)."""
    groupwise_8bit = (CORPUS / "flufl_groupwise_01.eml").read_bytes().replace(
        b"X-Mailer:", b"X-Mailer: Gr\xc3\xbc\xdfe \xff", 1)  # an 8-bit field: once a crash
    assert groupwise_8bit != (CORPUS / "flufl_groupwise_01.eml").read_bytes()
    return {"dsn_first": (_verp(settings, "hard1@example.com", _dsn("hard1@example.com", "5.1.1", "<x1@x>")),
                          "hard1@example.com", "bounced"),
            "groupwise_8bit": (_verp(settings, "userx@example.edu", groupwise_8bit), "userx@example.edu", "bounced"),
            "arf": (_verp(settings, "user@example.com", (CORPUS / "rfc5965_arf.eml").read_bytes()),
                    "user@example.com", "complained"),
            "dsn_last": (_verp(settings, "hard2@example.com", _dsn("hard2@example.com", "5.1.1", "<x2@x>")),
                         "hard2@example.com", "bounced")}


def _mixed(settings) -> list[tuple[str, bytes]]:
    """Genuine reports first, last and in between the odd messages."""
    genuine, odd = _genuine(settings), sorted(ODD)
    order = ["dsn_first", *odd[:3], "groupwise_8bit", "arf", *odd[3:], "dsn_last"]
    return [(n, genuine[n][0] if n in genuine else ODD[n][0]) for n in order]


@pytest.mark.parametrize("name", sorted(ODD))
def test_each_odd_message_is_classified_without_raising(name):
    raw, kind = ODD[name]
    c = Classifier(MessageIndex(None), lambda t: None, "news@example.org")
    [v] = c.classify(raw)
    assert v.kind == kind, v
    if kind == "unreadable":
        assert v.reason


def test_deep_nesting_is_cut_at_a_fixed_depth_not_the_recursion_limit():
    c = Classifier(MessageIndex(None), lambda t: None)
    assert [v.kind for v in c.classify(nested(bounces.MAX_DEPTH - 2))] == ["unrecognised"]
    [v] = c.classify(nested(bounces.MAX_DEPTH + 1))
    assert (v.kind, v.reason) == ("unreadable", f"MIME parts nested deeper than {bounces.MAX_DEPTH} levels")


def _source(kind: str, messages: list[bytes], tmp_path: Path, request):
    if kind == "mbox":
        box = mailbox.mbox(tmp_path / "bounces.mbox")
        for m in messages:
            box.add(m)
        box.close()
        return FileSource(tmp_path / "bounces.mbox", "mbox"), lambda: (tmp_path / "bounces.mbox").read_bytes()
    if kind == "maildir":
        _maildir(tmp_path / "md", messages)
        return FileSource(tmp_path / "md", "maildir"), lambda: _tree(tmp_path / "md")
    server = request.getfixturevalue("imap")
    _append(server, messages)
    return ImapSource(server.env(), "INBOX", "Processed", readonly=False), lambda: _flags(server)


@pytest.mark.parametrize("kind", ["mbox", "maildir", "imap"])
def test_odd_messages_left_alone_genuine_reports_recorded(env, tmp_path, request, kind, database_url):
    settings, state = env["settings"], env["state"]
    mixed = _mixed(settings)
    environ = {"NEWSLETTER_SECRET": SECRET, **({"NEWSLETTER_DATABASE_URL": database_url} if database_url else {})}
    source, snapshot = _source(kind, [raw for _, raw in mixed], tmp_path, request)
    before = snapshot()
    audience = Audience.in_state(state, database_url)
    try:
        first = run(source, classifier_for(settings, state, environ), audience, 3, dry_run=False)
        genuine = _genuine(settings)
        assert (first.read, first.bounced, first.complaints) == (len(mixed), 3, 1)
        assert (first.unreadable, first.unrecognised) == (len(UNREADABLE), len(ODD) - len(UNREADABLE))
        for _, email, status in genuine.values():
            assert audience.status(email).status == status, email
        unreadable_lines = [line for line in first.lines if ": unreadable" in line]
        assert len(unreadable_lines) == len(UNREADABLE)
        assert all(re.match(r"^(key|UID) \S+: unreadable: \S", line) for line in unreadable_lines), unreadable_lines
        if kind == "imap":  # recognised ones flagged and moved; the odd ones unflagged, still in INBOX
            uids = [key.split(b" ", 1)[0] for key in before]  # in the order appended
            odd_uids = {uid for uid, (name, _) in zip(uids, mixed, strict=True) if name in ODD}
            after = snapshot()
            assert {key.split(b" ", 1)[0] for key in after} == odd_uids
            assert all(flags == b"" for flags in after.values())
        else:
            assert snapshot() == before  # the user's file is only ever read
        second = run(source, classifier_for(settings, state, environ), audience, 3, dry_run=False)
    finally:
        audience.close()
        source.close()
    # the next run does not stop at them either: the odd ones are read (and left) again
    assert second.unreadable == len(UNREADABLE) and second.bounced == 0 and second.complaints == 0
    assert second.read == (len(ODD) if kind == "imap" else len(mixed))
    assert second.already == (0 if kind == "imap" else len(genuine))
