"""`newsletter inbox`: the corpus classified, recorded once, and nothing unrecognised touched.

Against a real Dovecot (tests/helpers/dovecot.py), an mbox file and a Maildir.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer import tokens
from newsletter_mailer.audience.bounces import Classifier, MessageIndex
from newsletter_mailer.cli import app
from newsletter_mailer.settings import load_settings
from tests.helpers import dovecot
from newsletter_mailer.state import State

CORPUS = Path(__file__).parent / "corpus" / "bounces"
SECRET = "ChXiGSV0m72ufN2yiyOoCRYkuCRivwg5W5o8pxdxDFw"

# file -> (kind, recipients, permanent); from flufl.bounce's own expectations and the RFCs
EXPECTED = {
    "flufl_aol_01.eml": ("bounce", ["screenname@aol.com"], True),
    "flufl_dsn_01.eml": ("bounce", ["userx@example.com"], True),
    "flufl_dsn_05.eml": ("bounce", ["userx@example.cz"], False),
    "flufl_dsn_11.eml": ("bounce", ["joem@example.com"], True),
    "flufl_dumbass_01.eml": ("unrecognised", [None], False),
    "flufl_exim_01.eml": ("bounce", ["userx@its.example.nl"], True),
    "flufl_groupwise_01.eml": ("bounce", ["userx@example.edu"], True),
    "flufl_microsoft_01.eml": ("bounce", ["userx@example.com"], True),
    "flufl_netscape_01.eml": ("bounce", ["aaaaa@corel.com", "bbbbb@corel.com"], True),
    "flufl_postfix_01.eml": ("bounce", ["xxxxx@local.ie"], True),
    "flufl_qmail_01.eml": ("bounce", ["userx@example.de"], True),
    "flufl_sendmail_01.eml": ("bounce", ["zzzzz@nfg.nl", "zzzzz@shaft.coal.nl"], True),
    "flufl_simple_03.eml": ("bounce", ["userx@example.za"], False),
    "flufl_simple_17.eml": ("bounce", ["userx@example.com"], True),
    "flufl_simple_28.eml": ("bounce", ["userx@example.com"], False),
    "flufl_simple_45.eml": ("bounce", ["subscriber@earthlink.net"], True),
    "flufl_yahoo_01.eml": ("bounce", ["userx@example.com"], True),
    "flufl_yahoo_13.eml": ("bounce", ["bogus-address@example.net"], True),
    "rfc5965_arf.eml": ("complaint", ["user@example.com"], True),
    "rfc3834_vacation.eml": ("autoreply", [None], False),
    "autoreply_out_of_office.eml": ("autoreply", [None], False),
    "autoreply_x_autoreply.eml": ("autoreply", [None], False),
    "autoreply_x_autorespond.eml": ("autoreply", [None], False),
    "plain_reply.eml": ("unrecognised", [None], False),
}
# The original Message-ID each corpus report returns, where it returns one: a real send has it in
# its ledger. The others name their reader only by the VERP address a real send would use.
RETURNED_IDS = {
    "flufl_dsn_01.eml": "<F1218V8zDv60gxapzha000001ae@hotmail.com>",
    "flufl_dsn_11.eml": "<mailman.0.1035637201.19036.mailman-developers@python.org>",
    "flufl_groupwise_01.eml": "<20010720085308.H17468@magic.example.org>",
    "flufl_yahoo_13.eml": "<130907fb-848c-d154-8e59-ed1e08319fcf@yahoo.com>",
    "rfc5965_arf.eml": "<8787KJKJ3K4J3K4J3K4J3.mail@example.net>",
}


@pytest.fixture
def env(newsletter_dir: Path, monkeypatch) -> dict:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    settings, _ = load_settings(newsletter_dir / "newsletter.toml")
    return {"settings": settings, "state": newsletter_dir / ".newsletter", "dir": newsletter_dir}


def _token(settings, email: str, issue: str | None = None) -> str:
    return tokens.make_unsubscribe(SECRET.encode(), settings.list_id_header, email, issue)


def _dsn(to: str, status: str, message_id: str, issue: str = "") -> bytes:
    """A Postfix-style RFC 3464 report returning the original's headers."""
    issue_header = f"X-Newsletter-Issue: {issue}\n" if issue else ""
    return f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: news@example.org
Subject: Undelivered Mail Returned to Sender
Message-ID: <dsn-{hashlib.sha1((to + status + message_id + issue).encode()).hexdigest()}@mx.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

The mail system could not deliver your message.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {to}
Original-Recipient: rfc822;{to}
Action: {"failed" if status.startswith("5") else "delayed"}
Status: {status}
Diagnostic-Code: smtp; {status[0]}52 {status} mailbox problem

--B
Content-Type: text/rfc822-headers

From: News <news@example.org>
To: {to}
Subject: The issue
Message-ID: {message_id}
{issue_header}
--B--
""".replace("\n", "\r\n").encode()


def _unsub(to: str, subject: str) -> bytes:
    return (f"From: Reader <reader@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <u-{hashlib.sha1(subject.encode()).hexdigest()}@example.com>\r\n\r\nplease\r\n").encode()


def _ledger(state: Path, rows: list[tuple[str, str, str]]) -> None:

    led = State(state).ledger()
    led.db.executemany("INSERT INTO deliveries (issue, email, status, message_id, updated_at) "
                       "VALUES (?,?,'sent',?,'2020-09-01')", rows)
    led.close()


def _as_sent(env, name: str) -> bytes:
    """A corpus report as it comes back from a real send: tied to our mail by its returned
    Message-ID in the ledger, else by the VERP envelope address it was delivered to."""
    raw = (CORPUS / name).read_bytes()
    kind, emails, _ = EXPECTED[name]
    if kind not in ("bounce", "complaint"):
        return raw
    if name in RETURNED_IDS:
        _ledger(env["state"], [("2020-09", emails[0], RETURNED_IDS[name])])
        return raw
    return f"Delivered-To: bounces+{_token(env['settings'], emails[0], '2020-09')}@example.org\r\n".encode() + raw


def _run(env, *args, extra_env=None):
    return CliRunner().invoke(app, ["inbox", "--config", str(env["dir"] / "newsletter.toml"), *args],
                              env=extra_env, catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_classified(name):
    kind, emails, permanent = EXPECTED[name]
    verdicts = Classifier(MessageIndex(None), lambda t: None, "news@example.org").classify(
        (CORPUS / name).read_bytes())
    assert [v.kind for v in verdicts] == [kind] * len(emails)
    assert [v.email for v in verdicts] == emails
    assert all(v.permanent == permanent for v in verdicts)


def test_every_corpus_file_has_an_expectation():
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


def test_autoreplies_are_never_bounces_even_with_bounce_words():
    c = Classifier(MessageIndex(None), lambda t: None)
    for name in ("rfc3834_vacation.eml", "autoreply_out_of_office.eml", "autoreply_x_autoreply.eml"):
        assert [v.kind for v in c.classify((CORPUS / name).read_bytes())] == ["autoreply"]


def test_ledger_message_id_names_recipient_and_issue(env):
    _ledger(env["state"], [("2020-09", "ann@example.com", "<abc@example.org>")])
    c = Classifier(MessageIndex(State(env["state"])), lambda t: None)
    [v] = c.classify(_dsn("ann-forwarded@example.net", "5.1.1", "<ABC@example.org>"))
    assert (v.kind, v.email, v.issue, v.permanent) == ("bounce", "ann@example.com", "2020-09", True)
    assert "5.1.1" in v.reason


def test_verp_names_the_recipient(env):
    token = _token(env["settings"], "verp@example.com", "2020-10")
    c = Classifier(MessageIndex(None), lambda t: tokens.read_unsubscribe(
        SECRET.encode(), env["settings"].list_id_header, t))
    raw = (CORPUS / "flufl_dumbass_01.eml").read_bytes().replace(
        b"\nTo:", f"\nDelivered-To: bounces+{token}@example.org\nX-Original-To: x@y\nTo:".encode(), 1)
    raw = b"From: MAILER-DAEMON@example.net\n" + raw
    [v] = c.classify(raw)
    assert (v.kind, v.email, v.issue) == ("bounce", "verp@example.com", "2020-10")


def _maildir(path: Path, messages: list[bytes]) -> mailbox.Maildir:
    box = mailbox.Maildir(path, create=True)
    for m in messages:
        box.add(m)
    return box


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_maildir_records_once_and_changes_nothing(env, tmp_path):
    _ledger(env["state"], [("2020-09", "hard@example.com", "<m1@example.org>")])
    s = env["settings"]
    msgs = [_dsn("hard@example.com", "5.1.1", "<m1@example.org>"),
            _as_sent(env, "rfc5965_arf.eml"),
            (CORPUS / "rfc3834_vacation.eml").read_bytes(),
            (CORPUS / "plain_reply.eml").read_bytes(),
            _unsub(s.unsubscribe_mailto or "x@y", f"unsubscribe {_token(s, 'leaver@example.com', '2020-09')}"),
            _unsub(s.unsubscribe_mailto or "x@y", "unsubscribe not-a-valid-token-at-all-xxxxx")]
    _maildir(tmp_path / "md", msgs)
    before = _tree(tmp_path / "md")
    r = _run(env, "--maildir", str(tmp_path / "md"))
    assert r.exit_code == 0, r.output
    assert "1 bounced (permanent)" in r.output and "1 complaint(s)" in r.output
    assert "1 unsubscribe(s)" in r.output and "ignored 1 auto-reply" in r.output
    assert "left alone 2 unrecognised" in r.output
    aud = State(env["state"]).audience()
    assert aud.status("hard@example.com").status == "bounced"
    assert aud.status("hard@example.com").issue == "2020-09"
    assert aud.status("user@example.com").status == "complained"
    assert aud.status("leaver@example.com").status == "unsubscribed"
    assert aud.status("reader@example.com") is None
    assert aud.counts_for_issue("2020-09")["bounced"] == 1
    aud.close()
    assert _tree(tmp_path / "md") == before
    again = _run(env, "--maildir", str(tmp_path / "md"))
    assert "recorded: 0 bounced (permanent), 0 soft" in again.output and "already recorded: 4 (read by an earlier run)" in again.output
    assert "ignored 0" not in again.output
    aud = State(env["state"]).audience()
    assert [h[0] for h in aud.history("hard@example.com")] == ["bounced"]
    aud.close()


def test_soft_bounces_need_the_limit_on_different_issues(env, tmp_path):
    rows = [(f"issue-{i}", "soft@example.com", f"<s{i}@example.org>") for i in range(3)]
    _ledger(env["state"], rows)
    same = [_dsn("soft@example.com", "4.2.2", "<s0@example.org>"), _dsn("soft@example.com", "4.2.2", "<s0@example.org>")
            .replace(b"mailbox problem", b"mailbox full")]
    _maildir(tmp_path / "a", [_dsn("soft@example.com", "4.2.2", "<s0@example.org>"),
                              _dsn("soft@example.com", "4.2.2", "<s1@example.org>")] + same[1:])
    assert _run(env, "--maildir", str(tmp_path / "a")).exit_code == 0
    aud = State(env["state"]).audience()
    assert aud.status("soft@example.com") is None
    assert aud.soft_bounce_count("soft@example.com") == 2
    aud.close()
    _maildir(tmp_path / "b", [_dsn("soft@example.com", "4.2.2", "<s2@example.org>")])
    r = _run(env, "--maildir", str(tmp_path / "b"))
    assert "(1 reached the limit)" in r.output
    aud = State(env["state"]).audience()
    assert aud.status("soft@example.com").status == "bounced"
    assert aud.counts_for_issue("issue-2") == {"bounced": 1, "complained": 0, "unsubscribed": 0, "soft_bounces": 1}
    aud.close()


def test_mbox_is_read_not_changed_and_dry_run_records_nothing(env, tmp_path):
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in ("flufl_dsn_01.eml", "rfc5965_arf.eml", "plain_reply.eml"):
        box.add(_as_sent(env, name) if name == "flufl_dsn_01.eml" else (CORPUS / name).read_bytes())
    box.close()
    before = (tmp_path / "bounces.mbox").read_bytes()
    dry = _run(env, "--mbox", str(tmp_path / "bounces.mbox"), "--dry-run")
    assert dry.exit_code == 0 and "bounced userx@example.com" in dry.output and "nothing recorded" in dry.output
    aud = State(env["state"]).audience()
    assert aud.status("userx@example.com") is None and aud.processed([]) == set()
    aud.close()
    assert _run(env, "--mbox", str(tmp_path / "bounces.mbox")).exit_code == 0
    assert (tmp_path / "bounces.mbox").read_bytes() == before
    aud = State(env["state"]).audience()
    assert aud.status("userx@example.com").status == "bounced"
    assert aud.status("user@example.com") is None  # the ARF has no ledger row here: for a human
    aud.close()


def test_missing_mbox_is_one_line_exit_2(env, tmp_path):
    r = _run(env, "--mbox", str(tmp_path / "nope.mbox"))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "mbox file not found" in r.output


def test_a_maildir_given_as_mbox_is_named_a_folder(env, tmp_path):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True)
    r = _run(env, "--mbox", str(tmp_path / "Maildir"))
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "is a folder, not an mbox file (for a Maildir folder use --maildir)" in r.output


def test_one_source_required(env):
    r = _run(env)
    assert r.exit_code == 2 and "name one mailbox" in r.output


# --- against a real Dovecot -------------------------------------------------------------

@pytest.fixture
def imap(tmp_path):
    if not dovecot.available():
        pytest.skip("dovecot is not installed: run .ci/install-system.sh")
    server = dovecot.start(tmp_path / "dovecot")
    yield server
    server.stop()


def _append(server, messages: list[bytes]) -> None:
    c = server.client()
    for m in messages:
        assert c.append("INBOX", None, None, m)[0] == "OK"
    c.logout()


def _flags(server, folder="INBOX") -> dict[bytes, bytes]:
    """Message-ID header -> FLAGS of every message in folder, in UID order."""
    c = server.client()
    c.select(folder, readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    c.logout()
    out = {}
    for item in data:
        if isinstance(item, tuple):
            flags = item[0].split(b"FLAGS (")[1].split(b")")[0].split()
            out[item[0].split(b"UID ")[1].split()[0] + b" " + item[1].strip()] = b" ".join(f for f in flags if f != b"\\Recent")  # \Recent is the server's
    return out


def test_imap_recognised_flagged_unrecognised_untouched(env, imap):
    names = sorted(EXPECTED)
    _append(imap, [_as_sent(env, n) for n in names])
    dry = _run(env, "--imap", "--dry-run", extra_env=imap.env())
    assert dry.exit_code == 0, dry.output
    assert all(f == b"" for f in _flags(imap).values())
    r = _run(env, "--imap", extra_env=imap.env())
    assert r.exit_code == 0, r.output
    kinds = [EXPECTED[n][0] for n in names]
    assert f"read {len(names)} message(s)" in r.output
    assert f"left alone {kinds.count('unrecognised')} unrecognised" in r.output
    assert f"{kinds.count('complaint')} complaint(s)" in r.output
    flags = list(_flags(imap).values())  # in UID order, which is the order appended
    for n, flag in zip(names, flags, strict=True):
        assert flag == (b"" if EXPECTED[n][0] == "unrecognised" else b"$NewsletterSeen"), n
    aud = State(env["state"]).audience()
    assert aud.status("userx@example.cz") is None  # 4.4.1: counted, not bounced
    assert aud.status("joem@example.com").status == "bounced"
    assert aud.status("user@example.com").status == "complained"
    aud.close()
    again = _run(env, "--imap", extra_env=imap.env())
    assert "read 2 message(s)" in again.output and "0 bounced" in again.output


def test_imap_move_to_and_starttls(env, imap):
    _append(imap, [_as_sent(env, "flufl_dsn_11.eml"), (CORPUS / "plain_reply.eml").read_bytes()])
    r = _run(env, "--imap", "--move-to", "Processed",
             extra_env=imap.env(IMAP_SECURITY="starttls", IMAP_PORT=str(imap.imap_port)))
    assert r.exit_code == 0, r.output
    assert [k.split(b" ", 1)[1] for k in _flags(imap)] == [b"Message-ID: <reply-1@example.com>"]
    assert len(_flags(imap, "Processed")) == 1


def test_imap_wrong_password_one_line_no_password(env, imap):
    r = _run(env, "--imap", extra_env=imap.env(IMAP_PASSWORD="wrong-password-xyz"))
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "login refused" in r.output and "wrong-password-xyz" not in r.output


def test_imap_untrusted_certificate_names_imap_ca_file_as_the_fix(env, imap):
    r = _run(env, "--imap", extra_env={**imap.env(), "IMAP_CA_FILE": ""})
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "TLS certificate check failed for the IMAP server" in r.output
    assert "set IMAP_CA_FILE to your organisation's CA" in r.output


def test_imap_unreachable_host(env, imap):
    r = _run(env, "--imap", extra_env=imap.env(IMAP_PORT="1"))
    assert r.exit_code == 2 and "cannot reach the IMAP server" in r.output


# --- forged reports: anyone can mail the bounce address ------------------------------------

def _forged_arf(rcpt: str) -> bytes:
    """A feedback report from a stranger naming a reader, returning a message we never sent."""
    return (CORPUS / "rfc5965_arf.eml").read_bytes().replace(
        b"From: <abusedesk@example.com>", b"From: <stranger@evil.example>").replace(
        b"Original-Rcpt-To: <user@example.com>", f"Original-Rcpt-To: <{rcpt}>".encode()).replace(
        b"Removal-Recipient: user@example.com", f"Removal-Recipient: {rcpt}".encode()).replace(
        b"8787KJKJ3K4J3K4J3K4J3.mail@example.net", b"<forged-1@evil.example>")


# kind -> (the forged message, what it is classified as, whom it names)
FORGED = {"arf": (lambda: _forged_arf("a1@example.org"), "complaint", "a1@example.org"),
          "dsn": (lambda: _dsn("a2@example.org", "5.1.1", "<forged-2@evil.example>", "2020-09"), "bounce",
                  "a2@example.org")}


@pytest.mark.parametrize("kind", sorted(FORGED))
def test_a_forged_report_changes_nothing_and_is_counted_unmatched(env, tmp_path, kind):
    _ledger(env["state"], [("2020-09", "a1@example.org", "<real-1@example.org>"),
                           ("2020-09", "a2@example.org", "<real-2@example.org>")])
    make, classified, named = FORGED[kind]
    raw = make()
    [v] = Classifier(MessageIndex(State(env["state"])), lambda t: None).classify(raw)
    assert (v.kind, v.email, v.tied) == (classified, named, False)  # classified as before, not tied
    _maildir(tmp_path / "md", [raw])
    dry = _run(env, "--maildir", str(tmp_path / "md"), "--dry-run")
    assert "not tied to our mail" in dry.output and "left for a human" in dry.output, dry.output
    r = _run(env, "--maildir", str(tmp_path / "md"))
    assert r.exit_code == 0, r.output
    assert "0 bounced (permanent)" in r.output and "0 complaint(s)" in r.output
    assert "1 unmatched (not tied to our mail: left for a human)" in r.output, r.output
    aud = State(env["state"]).audience()
    assert aud.status("a1@example.org") is None and aud.status("a2@example.org") is None
    assert aud.processed([hashlib.sha256(raw).hexdigest()]) == set()  # a human may still act on it
    aud.close()


def test_the_same_report_tied_by_its_ledger_row_uses_the_ledgers_recipient(env, tmp_path):
    _ledger(env["state"], [("2020-09", "a2@example.org", "<real-2@example.org>")])
    _maildir(tmp_path / "md", [_dsn("someone-else@example.net", "5.1.1", "<real-2@example.org>")])
    r = _run(env, "--maildir", str(tmp_path / "md"))
    assert "1 bounced (permanent)" in r.output and "0 unmatched" in r.output, r.output
    aud = State(env["state"]).audience()
    assert aud.status("a2@example.org").status == "bounced" and aud.status("someone-else@example.net") is None
    aud.close()


def test_a_complaint_tied_by_the_returned_list_unsubscribe_token(env):
    token = _token(env["settings"], "reader@example.org", "2020-09")
    raw = _forged_arf("other@example.org").replace(
        b"Subject: Earn money\n", f"Subject: Earn money\nList-Unsubscribe: <https://example.org/u/{token}>\n".encode())
    c = Classifier(MessageIndex(None), lambda t: tokens.read_unsubscribe(SECRET.encode(),
                                                                        env["settings"].list_id_header, t))
    [v] = c.classify(raw)
    assert (v.kind, v.email, v.issue, v.tied) == ("complaint", "reader@example.org", "2020-09", True)


def test_imap_leaves_forged_reports_unflagged_and_unmoved(env, imap):
    _append(imap, [make() for make, _, _ in FORGED.values()])
    r = _run(env, "--imap", "--move-to", "Processed", extra_env=imap.env())
    assert r.exit_code == 0 and "2 unmatched" in r.output, r.output
    assert list(_flags(imap).values()) == [b"", b""]
    aud = State(env["state"]).audience()
    assert aud.status("a1@example.org") is None and aud.status("a2@example.org") is None
    aud.close()


def test_the_ledger_on_postgresql_ties_a_bounce_by_its_message_id(database_url, tmp_path):
    """With the ledger in PostgreSQL, the returned Message-ID is looked up there (not in a file)."""
    from newsletter_mailer.providers.base import Outcome

    ledger = State(tmp_path, database_url).ledger()
    ledger.begin("2020-09", ["ann@example.com"], "smtp", ["<pg-1@example.org>"])
    ledger.finish("2020-09", [Outcome("ann@example.com", True, "<pg-1@example.org>")])
    ledger.close()
    c = Classifier(MessageIndex(State(tmp_path, database_url)), lambda t: None)
    [v] = c.classify(_dsn("ann-forwarded@example.net", "5.1.1", "<PG-1@example.org>"))
    assert (v.kind, v.email, v.issue, v.permanent) == ("bounce", "ann@example.com", "2020-09", True)
