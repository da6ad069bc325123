"""Generated mail for `newsletter inbox` (issue 18): mutated reports and messages among genuine ones.

Hypothesis mutates the corpus (bytes flipped, cut and inserted, 8-bit and encoded-word garbage
in headers, headers dropped and repeated, line endings changed, parts nested up to 40 deep)
and mixes two genuine reports into every mailbox. Each mailbox is a real Maildir read by the
real run against the real store (SQLite and PostgreSQL): no run may raise, every message is
counted, and every genuine report is recorded. NEWSLETTER_INBOX_EXAMPLES sets the number of
mailboxes (default 50, 17 to 32 messages each); the slow test reads ten times as many.
Run with -s to see how the messages were classified.
"""

from __future__ import annotations

import os
from collections import Counter
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter_mailer.state import State
from newsletter_mailer.audience.inbox import classifier_for, run
from newsletter_mailer.audience.mailbox import FileSource
from tests.test_inbox import CORPUS, SECRET, _dsn, _maildir, env  # noqa: F401,F811 - env: a fixture
from tests.test_inbox_odd import _verp, nested

EXAMPLES = int(os.environ.get("NEWSLETTER_INBOX_EXAMPLES", "50"))
SEEDS = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))] + [
    _dsn("seed@example.com", "5.1.1", "<seed-1@example.org>", "2020-09"), nested(3), nested(2, rfc822=True)]
COUNTS: Counter = Counter()
_mailboxes = count()


def _lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\n")


def _header_count(raw: bytes) -> int:
    """How many lines the (rough) header block has: where header mutations go."""
    return len(raw.replace(b"\r", b"").split(b"\n\n", 1)[0].split(b"\n"))


@st.composite
def mutated(draw) -> bytes:
    raw = draw(st.sampled_from(SEEDS))
    for op in draw(st.lists(st.sampled_from(["flip", "cut", "insert", "8bit", "word", "drop", "repeat",
                                             "eol", "nest", "nest822", "truncate"]), min_size=1, max_size=4)):
        if op == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + draw(st.binary(min_size=1, max_size=1)) + raw[i + 1:]
        elif op == "cut" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + raw[i + draw(st.integers(1, 400)):]
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw = raw[:i] + draw(st.binary(max_size=60)) + raw[i:]
        elif op in ("8bit", "word", "drop", "repeat"):
            lines = _lines(raw)
            i = draw(st.integers(0, _header_count(raw) - 1))
            if op == "8bit":
                lines[i] = lines[i].rstrip(b"\r") + draw(st.binary(min_size=1, max_size=12).map(
                    lambda b: bytes(x | 0x80 for x in b)))
            elif op == "word":
                lines[i] = lines[i].rstrip(b"\r") + b" =?" + draw(st.sampled_from(
                    [b"utf-8?q?=FF=FE", b"x-unknown?b?!!!", b"utf-8?b?////", b"iso-2022-jp?q?=1B$B", b"?"])) + b"?="
            elif op == "drop":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            raw = b"\n".join(lines)
        elif op == "eol":
            raw = raw.replace(b"\r\n", b"\n").replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\n\n"])))
        elif op in ("nest", "nest822"):
            depth = draw(st.integers(1, 40))
            for level in range(depth):
                raw = (b"From: MAILER-DAEMON@x.example\r\nContent-Type: message/rfc822\r\n\r\n" + raw
                       if op == "nest822" else
                       b'From: a@x.example\r\nContent-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n%s\r\n--n%d--\r\n'
                       % (level, level, raw, level))
        elif op == "truncate":
            raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def _mailbox_run(env, tmp_path, database_url, mailboxes) -> None:
    """Each generated mailbox (mutated messages, two genuine reports put among them) read once."""
    COUNTS.clear()
    state = env["state"]
    environ = {"NEWSLETTER_SECRET": SECRET, **({"NEWSLETTER_DATABASE_URL": database_url} if database_url else {})}
    handle = State(state, database_url)
    audience = handle.audience()
    classifier = classifier_for(env["settings"], handle, environ)
    try:
        @given(messages=st.lists(mutated(), min_size=15, max_size=30), where=st.tuples(st.integers(0, 30),
                                                                                     st.integers(0, 30)))
        @mailboxes
        def one_mailbox(messages, where):
            n = next(_mailboxes)
            genuine = [f"genuine-{n}-{i}@example.com" for i in (0, 1)]
            for email, at in zip(genuine, where):
                messages.insert(min(at, len(messages)),
                                _verp(env["settings"], email, _dsn(email, "5.1.1", f"<g-{n}@example.org>")))
            _maildir(tmp_path / f"md{n}", messages)
            source = FileSource(tmp_path / f"md{n}", "maildir")
            try:
                summary = run(source, classifier, audience, 3, dry_run=False)  # never raises
            finally:
                source.close()
            assert summary.read == len(messages)
            for email in genuine:
                found = audience.status(email)
                assert found is not None and found.status == "bounced", (email, summary.lines)
            COUNTS.update(messages=len(messages), unreadable=summary.unreadable, unrecognised=summary.unrecognised,
                          bounced=summary.bounced, soft=summary.soft, complaints=summary.complaints,
                          autoreplies=summary.autoreplies, unmatched=summary.unmatched, mailboxes=1)

        one_mailbox()
    finally:
        audience.close()
        print(f"\ninbox generated ({database_url and 'postgres' or 'sqlite'}): {dict(COUNTS)}")


def _examples(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


def test_generated_mail_never_stops_the_inbox_and_genuine_reports_are_recorded(env, tmp_path, database_url):
    _mailbox_run(env, tmp_path, database_url, _examples(EXAMPLES))


@pytest.mark.slow
def test_generated_mail_longer_run(env, tmp_path, database_url):
    _mailbox_run(env, tmp_path, database_url, _examples(EXAMPLES * 10))
