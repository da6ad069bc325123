"""`newsletter inbox` always finishes (issue 18): odd messages among genuine reports.

A reply whose From is raw UTF-8, a message with no From, a report with an 8-bit field, parts
nested a thousand deep, an empty message: each is read on its own. What the parsers cannot
read is counted unreadable, named under --verbose, never flagged, moved or remembered, and the
run goes on; the genuine reports around it are recorded. On an mbox, a Maildir and a real
Dovecot; the store on SQLite and PostgreSQL. Also the inbound VERP rule and the IMAP settings.
"""

from __future__ import annotations

import hashlib
import mailbox
import re
from pathlib import Path

import pytest

from newsletter_mailer import tokens
from newsletter_mailer.state import State
from newsletter_mailer.audience import bounces
from newsletter_mailer.audience.bounces import Classifier, MessageIndex
from newsletter_mailer.audience.inbox import classifier_for, run
from newsletter_mailer.audience.mailbox import FileSource, ImapSource
from tests.test_inbox import (CORPUS, SECRET, _append, _dsn, _flags, _maildir, _run, _token, _tree,  # noqa: F401
                              env, imap)  # noqa: F811 - fixtures


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
    handle = State(state, database_url)
    audience = handle.audience()
    try:
        first = run(source, classifier_for(settings, handle, environ), audience, 3, dry_run=False)
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
        second = run(source, classifier_for(settings, handle, environ), audience, 3, dry_run=False)
    finally:
        audience.close()
        source.close()
    # the next run does not stop at them either: the odd ones are read (and left) again
    assert second.unreadable == len(UNREADABLE) and second.bounced == 0 and second.complaints == 0
    assert second.read == (len(ODD) if kind == "imap" else len(mixed))
    assert second.already == (0 if kind == "imap" else len(genuine))


def test_cli_finishes_counts_and_names_the_unreadable_under_verbose(env, tmp_path):
    mixed = _mixed(env["settings"])
    box = _maildir(tmp_path / "md", [raw for _, raw in mixed])
    keys = {raw: key for key, raw in ((k, box.get_bytes(k)) for k in box.iterkeys())}
    before = _tree(tmp_path / "md")
    r = _run(env, "--maildir", str(tmp_path / "md"))
    assert r.exit_code == 0, r.output
    assert "3 bounced (permanent)" in r.output and "1 complaint(s)" in r.output
    assert f"left alone {len(UNREADABLE)} unreadable (--verbose names them)" in r.output
    assert "Traceback" not in r.output and "Exception in detector" not in r.output
    loud = _run(env, "--maildir", str(tmp_path / "md"), "--verbose")
    assert loud.exit_code == 0 and f"left alone {len(UNREADABLE)} unreadable;" in loud.output, loud.output
    for name in UNREADABLE:
        assert f"key {keys[ODD[name][0]]}: unreadable: " in loud.output, name
    assert "already recorded: 4" in loud.output
    assert _tree(tmp_path / "md") == before


def test_cli_imap_leaves_the_odd_ones_unflagged_and_names_their_uids(env, imap):
    mixed = _mixed(env["settings"])
    _append(imap, [raw for _, raw in mixed])
    r = _run(env, "--imap", "--verbose", extra_env=imap.env())
    assert r.exit_code == 0, r.output
    odd_uids = [key.split(b" ", 1)[0].decode() for key, (name, _) in zip(_flags(imap), mixed) if name in ODD]
    flags = dict(zip([key.split(b" ", 1)[0].decode() for key in _flags(imap)], _flags(imap).values()))
    for uid, (name, _) in zip(flags, mixed):
        assert flags[uid] == (b"" if name in ODD else b"$NewsletterSeen"), name
        assert (f"UID {uid}: unreadable: " in r.output) == (name in UNREADABLE), name
    again = _run(env, "--imap", extra_env=imap.env())
    assert again.exit_code == 0 and f"read {len(odd_uids)} message(s)" in again.output, again.output
    assert f"left alone {len(UNREADABLE)} unreadable" in again.output


# --- the inbound VERP rule: a bounce only from a report or a mailer daemon -----------------

def _to_verp(settings, email: str, headers: str, body: str = "Thanks for your message.\r\n") -> bytes:
    return (f"Delivered-To: bounces+{_token(settings, email, '2020-09')}@example.org\r\n"
            f"To: bounces+{_token(settings, email, '2020-09')}@example.org\r\n{headers}"
            f"Message-ID: <{hashlib.sha1(headers.encode()).hexdigest()}@example.net>\r\n\r\n{body}").encode()


VERP_CASES = {  # name -> (headers, body, kind)
    "helpdesk_ack": ("From: Support <support@helpdesk.example.net>\r\nSubject: [Ticket #4711] We got your request\r\n",
                     "Your request has been received and will be answered within 2 days.\r\n", "unrecognised"),
    "helpdesk_ack_marked": ("From: Support <support@helpdesk.example.net>\r\nSubject: [Ticket #4712] Received\r\n"
                            "Auto-Submitted: auto-replied\r\n", "We will answer soon.\r\n", "autoreply"),
    "human_note": ("From: A Friend <friend@example.net>\r\nSubject: saw this forwarded\r\n",
                   "Hi, someone forwarded your newsletter to me. Nice!\r\n", "unrecognised"),
    "mailer_daemon": ("From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nSubject: failure notice\r\n",
                      "I could not deliver it.\r\n", "bounce"),
    "postmaster": ("From: postmaster@mx.example.net\r\nSubject: Delivery problem\r\n", "Could not deliver.\r\n",
                   "bounce"),
    "null_return_path": ("Return-Path: <>\r\nFrom: Mail System <system@mx.example.net>\r\nSubject: Returned\r\n",
                         "Your message was not delivered.\r\n", "bounce"),
}


@pytest.mark.parametrize("name", sorted(VERP_CASES))
def test_mail_to_a_verp_address_is_a_bounce_only_from_a_report_or_a_daemon(env, name):
    headers, body, kind = VERP_CASES[name]
    c = Classifier(MessageIndex(None), lambda t: tokens.read_unsubscribe(
        SECRET.encode(), env["settings"].list_id_header, t))
    [v] = c.classify(_to_verp(env["settings"], "reader@example.org", headers, body))
    assert v.kind == kind, v
    if kind == "bounce":
        assert (v.email, v.issue, v.tied) == ("reader@example.org", "2020-09", True)


def test_a_postfix_dsn_to_a_verp_address_is_matched_with_no_message_id(env, tmp_path):
    """The returned headers carry no Message-ID: the VERP token alone names the reader."""
    s = env["settings"]
    dsn = _dsn("old-address@example.net", "5.1.1", "").replace(b"Message-ID: \r\n\r\n--B--", b"\r\n--B--")
    assert b"Message-ID: \r\n" not in dsn
    verp = f"bounces+{_token(s, 'reader@example.org', '2020-09')}@example.org"
    ack, note = (_to_verp(s, f"{who}@example.org", VERP_CASES[n][0], VERP_CASES[n][1])
                 for who, n in (("acked", "helpdesk_ack"), ("noted", "human_note")))
    _maildir(tmp_path / "md", [f"Delivered-To: {verp}\r\n".encode() + dsn, ack, note])
    r = _run(env, "--maildir", str(tmp_path / "md"))
    assert r.exit_code == 0 and "1 bounced (permanent)" in r.output and "left alone 2 unrecognised" in r.output, r.output
    aud = State(env["state"]).audience()
    assert aud.status("reader@example.org").status == "bounced"
    assert aud.status("acked@example.org") is None and aud.status("noted@example.org") is None
    aud.close()


# --- IMAP settings: one line naming the variable, exit 2, before any connection ------------

IMAP_BASE = {"IMAP_HOST": "127.0.0.1", "IMAP_USERNAME": "news", "IMAP_PASSWORD": "pw-not-shown-1234"}


@pytest.mark.parametrize("extra, needle", [
    ({"IMAP_PORT": "nine-nine-three"}, "IMAP_PORT 'nine-nine-three' is not a port number (e.g. export IMAP_PORT=993)"),
    ({"IMAP_PORT": "70000"}, "IMAP port 70000 is out of range"),
    ({"IMAP_SECURITY": "tls"}, "IMAP_SECURITY 'tls' is not ssl or starttls"),
    ({"IMAP_CA_FILE": "missing-ca.pem"}, "missing-ca.pem: cannot read the IMAP CA file: No such file"),
    ({"IMAP_CA_FILE": "NOT_PEM"}, "the IMAP CA file holds no PEM certificate (check IMAP_CA_FILE"),
])
def test_bad_imap_settings_are_one_line_exit_2(env, tmp_path, extra, needle):
    if extra.get("IMAP_CA_FILE") == "NOT_PEM":
        (tmp_path / "ca.pem").write_text("not a certificate\n")
        extra = {"IMAP_CA_FILE": str(tmp_path / "ca.pem")}
    r = _run(env, "--imap", extra_env={**IMAP_BASE, **extra})
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert needle in r.output and "pw-not-shown-1234" not in r.output
    if "CA_FILE" in str(extra):
        assert "IMAP_CA_FILE" in r.output
