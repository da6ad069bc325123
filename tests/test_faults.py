"""Faults, through the CLI's `send`: for each, the documented behaviour, nothing lost,
nothing sent twice, a clear message, and the exit code and the ledger checked.

SMTP faults are staged by aiosmtpd (and, for a connection dropped while the message data
is still going out, a raw socket server); SendGrid's by a scripted local HTTP server
(tests/helpers/sinks.py). The CLI runs in-process (typer's CliRunner) for speed.
The drop-after-data, server-down-and-resume and error-budget tests run with the ledger in SQLite
and in PostgreSQL (`state_db`).
"""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from tests.helpers.postgres import query
from tests.helpers.sinks import MidDataDropServer, Reply, SendGridSink, free_port, read_sendgrid_log

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

USER, PW = "mailer", "planted-smtp-pw-5d1c"
API_KEY = "SG.planted-fault-key-77ab"
runner = CliRunner()


# --- the newsletter folder -----------------------------------------------------------------------


def write_list(folder: Path, emails: list[str], name: str = "subs.csv", extra: dict[str, str] | None = None) -> None:
    with open(folder / name, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "School Year"])
        for e in emails:
            w.writerow([e, e.split("@")[0].title(), (extra or {}).get(e, "")])


def addrs(n: int, start: int = 0) -> list[str]:
    return [f"p{i:04d}@example.org" for i in range(start, start + n)]


@pytest.fixture
def nl(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "nl"
    (folder / "issues").mkdir(parents=True)
    settings = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
    (folder / "newsletter.toml").write_text(settings, encoding="utf-8")
    (folder / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    monkeypatch.chdir(folder)
    for var in ("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_SECURITY",
                "SENDGRID_API_KEY", "SENDGRID_API_HOST", "NEWSLETTER_DEBUG", "NEWSLETTER_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET", "2CkIyZ70kaVLIsCyBvam8CtLINQFRi3TSH-7X3wWEYo")
    monkeypatch.setenv("NEWSLETTER_BACKOFF_BASE", "0.005")
    return folder


@pytest.fixture
def state_db(nl, database_url, monkeypatch) -> str | None:
    """The ledger and the store in SQLite files, or in PostgreSQL named by NEWSLETTER_DATABASE_URL."""
    if database_url is not None:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    return database_url


@pytest.fixture(params=[1, 4], ids=["1conn", "4conn"])
def conns(request, monkeypatch) -> int:
    """The SMTP faults on one connection and on four ([delivery.smtp] connections, send_pool.py)."""
    monkeypatch.setenv("SMTP_CONNECTIONS", str(request.param))
    return request.param


def set_delivery(folder: Path, text: str) -> None:
    """Replace the [delivery] table's body lines (e.g. max_consecutive_failures) in newsletter.toml."""
    p = folder / "newsletter.toml"
    s = p.read_text(encoding="utf-8")
    s = s.replace("max_consecutive_failures = 10", text)
    p.write_text(s, encoding="utf-8")


def send(*args: str, provider: str = "smtp", lst: str = "subs.csv"):
    return runner.invoke(app, ["send", "issues/mini.yaml", "--list", lst, "--provider", provider, "--yes", *args])


def status(*args: str):
    return runner.invoke(app, ["status", "issues/mini.yaml", *args])


def ledger(folder: Path) -> dict[str, tuple[str, int, str | None]]:
    url = os.environ.get("NEWSLETTER_DATABASE_URL")
    if url:
        return {e: (s, p, r) for e, s, p, r in
                query(url, "SELECT email, status, permanent, reason FROM deliveries WHERE issue='mini'")}
    path = folder / ".newsletter" / "ledger.sqlite3"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return {e: (s, p, r) for e, s, p, r in
                db.execute("SELECT email, status, permanent, reason FROM deliveries WHERE issue='mini'")}
    finally:
        db.close()


def one_error_line(result) -> str:
    """stderr is exactly one line, `error: …`, and no traceback anywhere."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- SMTP servers ------------------------------------------------------------------------------


@dataclass
class Smtp:
    """aiosmtpd handler: stores what it accepts; misbehaves on request."""

    received: list[tuple[str, str]] = field(default_factory=list)   # (to, Message-ID)
    rcpt: Counter = field(default_factory=Counter)
    data: Counter = field(default_factory=Counter)
    rcpt_fail: dict[str, list[int]] = field(default_factory=dict)  # codes to answer RCPT, in turn
    data_fail: dict[str, list[int]] = field(default_factory=dict)  # codes to answer after the data
    reject: set[str] = field(default_factory=set)                   # 550 on RCPT, every time
    all_tempfail: bool = False                                      # 451 to every RCPT
    die_after: int | None = None                                    # stop listening after N messages
    controller: Controller | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt[address] += 1
        if address in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.all_tempfail:
            return "451 4.3.0 Mail server temporarily rejected message"
        codes = self.rcpt_fail.get(address)
        if codes:
            code = codes.pop(0)
            if code == 421:
                asyncio.get_running_loop().call_soon(server.transport.close)
                return "421 4.3.2 Service not available, closing transmission channel"
            return f"{code} 4.2.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        to = envelope.rcpt_tos[0]
        self.data[to] += 1
        codes = self.data_fail.get(to)
        if codes:
            return f"{codes.pop(0)} 4.3.0 Temporary failure after data, try again"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((to, msg["Message-ID"]))
        if self.die_after is not None and len(self.received) >= self.die_after:
            self.controller.server.close()              # nothing listens any more ...
            asyncio.get_running_loop().call_soon(server.transport.close)  # ... and this connection ends
        return "250 2.0.0 OK queued"

    def counts(self) -> Counter:
        return Counter(to for to, _ in self.received)


def _auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and auth_data.password == PW.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtpd(monkeypatch):
    started: list[Controller] = []

    def start(handler: Smtp | None = None, *, auth: bool = False, port: int | None = None) -> tuple[Smtp, int]:
        handler = handler or Smtp()
        port = port or free_port()
        kw = dict(authenticator=_auth, auth_required=True, auth_require_tls=False) if auth else {}
        c = Controller(handler, hostname="127.0.0.1", port=port, **kw)
        c.start()
        handler.controller = c
        started.append(c)
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(port))
        monkeypatch.setenv("SMTP_SECURITY", "none")
        return handler, port

    yield start
    for c in started:
        try:
            c.stop()
        except (AssertionError, RuntimeError):
            pass


# --- SMTP: temporary replies --------------------------------------------------------------------


def test_smtp_421_and_451_are_retried_and_each_sent_once(nl, smtpd, conns):
    emails = addrs(8)
    write_list(nl, emails)
    h = Smtp(rcpt_fail={emails[1]: [451, 451], emails[3]: [421], emails[5]: [450, 421, 452]},
             data_fail={emails[6]: [451]})
    smtpd(h)
    r = send()
    assert r.exit_code == 0, r.output
    assert "sent: 8, failed: 0, uncertain: 0" in r.stdout
    assert r.stderr == ""
    assert h.counts() == Counter({e: 1 for e in emails})
    assert h.rcpt[emails[1]] == 3 and h.rcpt[emails[3]] == 2 and h.rcpt[emails[5]] == 4
    assert h.data[emails[6]] == 2
    assert {e: s for e, (s, _, _) in ledger(nl).items()} == {e: "sent" for e in emails}


def test_smtp_4xx_that_never_clears_is_a_temporary_failure_retried_on_rerun(nl, smtpd, conns):
    emails = addrs(4)
    write_list(nl, emails)
    h = Smtp(rcpt_fail={emails[2]: [451] * 5})
    smtpd(h)
    r = send()
    assert r.exit_code == 1, r.output
    assert "sent: 3, failed: 1" in r.stdout
    assert f"failed {emails[2]}: 451 4.2.0 Try again later (gave up after 5 attempts)" in r.stdout
    assert ledger(nl)[emails[2]][:2] == ("failed", 0)  # temporary
    r = send()  # the same command: temporary failures are retried
    assert r.exit_code == 0, r.output
    assert "1 to send, 3 already sent" in r.stdout and "sent: 1, failed: 0" in r.stdout
    assert h.counts() == Counter({e: 1 for e in emails})


# --- SMTP: the connection dropped mid-DATA -----------------------------------------------------


def test_smtp_connection_dropped_mid_data_is_retried_once(nl, monkeypatch):
    """The message is far bigger than the socket buffers, so the drop comes while the data
    is still going out: the server never accepted it, and it is sent again, once."""
    emails = addrs(3)
    cols = [f"c{i}" for i in range(30)]
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(MINI_ISSUE + "  - heading: Big\n    body: \"" + " ".join("{{ %s | default('') }}" % c for c in cols)
                     + "\"\n", encoding="utf-8")
    with open(nl / "subs.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", *cols])
        for e in emails:
            w.writerow([e, *(["lorem ipsum " * 10_000] * len(cols) if e == emails[1] else [""] * len(cols))])
    server = MidDataDropServer(emails[1])
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(server.port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    try:
        r = send()
    finally:
        server.stop()
    assert r.exit_code == 0, r.output
    assert "sent: 3, failed: 0, uncertain: 0" in r.stdout
    assert server.partial_bytes == 20000
    assert Counter(server.received) == Counter({e: 1 for e in emails})
    assert {e: s for e, (s, _, _) in ledger(nl).items()} == {e: "sent" for e in emails}


@dataclass
class DropAfterData(Smtp):
    """Takes the message, then drops the connection instead of answering: delivery unknown."""

    victim: str = ""

    async def handle_DATA(self, server, session, envelope):
        result = await super().handle_DATA(server, session, envelope)
        if envelope.rcpt_tos[0] == self.victim and self.data[self.victim] == 1:
            server.transport.abort()
        return result


def test_smtp_drop_after_the_data_is_uncertain_held_back_and_never_doubled(nl, state_db, smtpd, conns):
    emails = addrs(4)
    write_list(nl, emails)
    h = DropAfterData(victim=emails[1])
    smtpd(h)
    r = send()
    assert r.exit_code == 0, r.output  # holding back is not a failure
    assert "sent: 3, failed: 0, uncertain: 1" in r.stdout
    assert f"uncertain (may or may not have arrived): {emails[1]}" in r.stdout
    r = send()
    assert r.exit_code == 0 and "held back: 1" in r.stdout and emails[1] in r.stdout
    assert "--resend-uncertain" in r.stdout
    st = status("--list-uncertain")
    assert f"uncertain\t{emails[1]}" in st.stdout and "(per message)" in st.stdout
    assert h.counts() == Counter({e: 1 for e in emails})  # the server has it once, nobody twice


def test_smtp_uncertain_row_keeps_the_message_id_the_server_logged(nl, smtpd):
    """The row of a message in flight names its Message-ID, so the server's log can be searched by it."""
    emails = addrs(3)
    write_list(nl, emails)
    h = DropAfterData(victim=emails[1])
    smtpd(h)
    r = send()
    assert "uncertain: 1" in r.stdout, r.output
    logged = dict(h.received)
    db = sqlite3.connect(nl / ".newsletter" / "ledger.sqlite3")
    try:
        ids = dict(db.execute("SELECT email, message_id FROM deliveries WHERE issue='mini'"))
    finally:
        db.close()
    assert ids == logged and len(set(ids.values())) == 3  # the uncertain one included, each its own
    st = status("--list-uncertain")
    assert f"uncertain\t{emails[1]}\tsmtp\t" in st.stdout and logged[emails[1]] in st.stdout


# --- SMTP: permanent refusals ------------------------------------------------------------------


def test_smtp_550_fails_those_recipients_permanently_and_goes_on(nl, smtpd, conns):
    emails = addrs(6)
    write_list(nl, emails)
    gone = {emails[1], emails[4]}
    h = Smtp(reject=set(gone))
    smtpd(h)
    r = send()
    assert r.exit_code == 1, r.output
    assert "sent: 4, failed: 2, uncertain: 0" in r.stdout
    for e in gone:
        assert f"failed {e}: 550 5.1.1 <{e}>: Recipient address rejected: User unknown" in r.stdout
    rows = ledger(nl)
    assert {e for e, (s, p, _) in rows.items() if s == "failed" and p == 1} == gone
    assert h.counts() == Counter({e: 1 for e in emails if e not in gone})

    # re-run: the refused are not retried without --retry-failed
    r = send()
    assert r.exit_code == 0, r.output
    assert "failed permanently before: 2 (retry with --retry-failed)" in r.stdout
    assert "every subscriber on the list has had this issue" not in r.stdout
    assert all(h.rcpt[e] == 1 for e in gone)
    st = status("--list-failed")
    assert "failed 2" in st.stdout and all(f"failed\t{e}\tpermanent" in st.stdout for e in gone)

    # the addresses were fixed at the other end: --retry-failed sends to them, once
    h.reject.clear()
    r = send("--retry-failed")
    assert r.exit_code == 0, r.output
    assert "2 to send, 4 already sent" in r.stdout and "sent: 2, failed: 0" in r.stdout
    assert h.counts() == Counter({e: 1 for e in emails})
    assert {s for s, _, _ in ledger(nl).values()} == {"sent"}


# --- SMTP: the server down, a login refused ----------------------------------------------------


def test_smtp_server_down_at_the_start(nl, monkeypatch):
    write_list(nl, addrs(3))
    port = free_port()  # nothing listens
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    r = send()
    assert r.exit_code != 0
    line = one_error_line(r)
    assert f"cannot connect to SMTP server 127.0.0.1:{port}: connection refused" in line
    assert "SMTP_HOST" in line
    assert ledger(nl) == {}  # nothing attempted, nothing recorded


def test_smtp_server_down_mid_send_stops_and_resumes(nl, state_db, smtpd, conns):
    emails = addrs(10)
    write_list(nl, emails)
    h, port = smtpd(Smtp(die_after=4))
    t0 = time.monotonic()
    r = send()
    assert time.monotonic() - t0 < 20
    assert r.exit_code != 0
    line = one_error_line(r)
    assert f"127.0.0.1:{port}" in line and "could not reconnect" in line
    assert "newsletter send" in line or "resume" in line
    # what went out before it stopped (with four, the connections still open go on a little)
    assert f"sent: {len(h.received)}" in r.stdout and (len(h.received) == 4 or conns > 1)
    rows = ledger(nl)
    sent = [e for e in emails if rows.get(e, ("",))[0] == "sent"]
    assert sorted(sent) == sorted(h.counts())
    if conns == 1:
        assert sent == emails[:4]
        assert rows[emails[4]][:2] == ("failed", 0)  # temporary: retried by the same command
        assert all(e not in rows for e in emails[5:])  # untouched
    else:  # those out on the other connections failed too, temporarily; the rest untouched
        assert all(s == "failed" and p == 0 for e, (s, p, _) in rows.items() if e not in sent)
        assert len(rows) < len(emails) or len(sent) < len(emails)
    # the server is back
    h2, _ = smtpd(Smtp(), port=port)
    r = send()
    assert r.exit_code == 0, r.output
    n = len(h.received)
    assert f"{10 - n} to send, {n} already sent" in r.stdout
    assert h.counts() + h2.counts() == Counter({e: 1 for e in emails})


def test_smtp_login_refused(nl, smtpd, monkeypatch):
    write_list(nl, addrs(3))
    h, port = smtpd(auth=True)
    monkeypatch.setenv("SMTP_USERNAME", USER)
    monkeypatch.setenv("SMTP_PASSWORD", PW + "-wrong")
    r = send()
    assert r.exit_code != 0
    line = one_error_line(r)
    assert f"SMTP login as '{USER}' refused by 127.0.0.1:{port}: 535" in line
    assert "SMTP_PASSWORD" in line
    assert PW not in r.output
    assert h.received == [] and ledger(nl) == {}
    monkeypatch.setenv("SMTP_PASSWORD", PW)
    r = send()
    assert r.exit_code == 0, r.output
    assert h.counts() == Counter({e: 1 for e in addrs(3)})


# --- the error budget ----------------------------------------------------------------------------


def test_error_budget_stops_after_consecutive_failures_and_resume_completes(nl, state_db, smtpd):
    set_delivery(nl, "max_consecutive_failures = 3")
    emails = addrs(20)
    write_list(nl, emails)
    h = Smtp(all_tempfail=True)  # say the relay is refusing everything for now
    smtpd(h)
    r = send()
    assert r.exit_code == 1, r.output
    line = one_error_line(r)
    assert "stopped after 3 failures in a row" in line
    assert "451 4.3.0" in line
    assert "newsletter send" in line  # how to resume
    assert "sent: 0, failed: 3" in r.stdout
    rows = ledger(nl)
    assert set(rows) == set(emails[:3]) and all(s == "failed" and p == 0 for s, p, _ in rows.values())
    assert sum(h.rcpt.values()) == 3 * 5  # 5 attempts each, then stop: the list is not burnt through
    # the cause is fixed: the same command completes
    h.all_tempfail = False
    r = send()
    assert r.exit_code == 0, r.output
    assert "sent: 20, failed: 0" in r.stdout
    assert h.counts() == Counter({e: 1 for e in emails})


def test_error_budget_with_permanent_refusals_says_how_to_retry_them(nl, smtpd):
    set_delivery(nl, "max_consecutive_failures = 3")
    emails = addrs(10)
    write_list(nl, emails)
    h = Smtp(reject=set(emails))  # e.g. the account may not send to anyone yet
    smtpd(h)
    r = send()
    assert r.exit_code == 1, r.output
    line = one_error_line(r)
    assert "stopped after 3 failures in a row" in line and "--retry-failed" in line
    assert set(ledger(nl)) == set(emails[:3])
    h.reject.clear()
    r = send("--retry-failed")
    assert r.exit_code == 0, r.output
    assert h.counts() == Counter({e: 1 for e in emails})


def test_failures_that_are_not_in_a_row_do_not_stop_the_send(nl, smtpd):
    set_delivery(nl, "max_consecutive_failures = 3")
    emails = addrs(12)
    write_list(nl, emails)
    gone = {emails[i] for i in (0, 1, 3, 4, 6, 7, 9, 10)}  # never three in a row
    h = Smtp(reject=gone)
    smtpd(h)
    r = send()
    assert r.exit_code == 1
    assert "sent: 4, failed: 8" in r.stdout
    assert "stopped" not in r.output


# --- SendGrid ------------------------------------------------------------------------------------


@pytest.fixture
def sendgrid(nl, monkeypatch, tmp_path):
    sinks: list[SendGridSink] = []

    def start(*script: Reply, default: Reply | None = None) -> SendGridSink:
        sink = SendGridSink(tmp_path / f"sendgrid{len(sinks)}.log", API_KEY, script=list(script),
                            default=default).start()
        sinks.append(sink)
        monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sink.url)
        return sink

    yield start
    for s in sinks:
        s.stop()


def accepted(sink: SendGridSink) -> Counter:
    return Counter(to for r in read_sendgrid_log(sink.log_path) for to in r["to"])


def sg_send(*args: str):
    return send(*args, provider="sendgrid")


def test_sendgrid_429_waits_until_the_reset(nl, sendgrid):
    emails = addrs(5)
    write_list(nl, emails)
    reset = int(time.time()) + 2
    sink = sendgrid(Reply(429, b'{"errors":[{"message":"too many requests"}]}',
                          headers={"X-RateLimit-Reset": str(reset)}))
    t0 = time.time()
    r = sg_send()
    assert r.exit_code == 0, r.output
    assert time.time() >= reset - 0.05 and time.time() - t0 < 10
    assert [q["status"] for q in sink.requests] == [429, 202]
    assert accepted(sink) == Counter({e: 1 for e in emails})
    assert {s for s, _, _ in ledger(nl).values()} == {"sent"}


@pytest.mark.parametrize("codes", [[500], [503], [500, 503, 502]])
def test_sendgrid_5xx_are_retried(nl, sendgrid, codes):
    emails = addrs(5)
    write_list(nl, emails)
    sink = sendgrid(*[Reply(c, b'{"errors":[{"message":"internal error"}]}') for c in codes])
    r = sg_send()
    assert r.exit_code == 0, r.output
    assert [q["status"] for q in sink.requests] == [*codes, 202]
    assert accepted(sink) == Counter({e: 1 for e in emails})


def test_sendgrid_5xx_that_persists_fails_temporarily_then_a_rerun_sends(nl, sendgrid):
    emails = addrs(3)
    write_list(nl, emails)
    sink = sendgrid(*[Reply(503, b"")] * 5)
    r = sg_send()
    assert r.exit_code == 1, r.output
    assert "SendGrid server error 503 after 5 attempts" in r.stdout
    assert all(s == "failed" and p == 0 for s, p, _ in ledger(nl).values())
    r = sg_send()
    assert r.exit_code == 0, r.output
    assert accepted(sink) == Counter({e: 1 for e in emails})


def test_sendgrid_request_that_times_out_is_uncertain_per_request(nl, sendgrid):
    (nl / "newsletter.toml").write_text((nl / "newsletter.toml").read_text() + "timeout = 0.5\n")
    emails = addrs(1500)  # two requests: 1000 (no answer in time) + 500
    write_list(nl, emails)
    sink = sendgrid(Reply(202, delay=1.5))  # SendGrid took the request but answered too late
    r = sg_send()
    assert r.exit_code == 0, r.output  # holding back is not a failure
    assert "sent: 500, failed: 0, uncertain: 1000" in r.stdout
    rows = ledger(nl)
    assert Counter(s for s, _, _ in rows.values()) == Counter({"uncertain": 1000, "sent": 500})
    assert "may have been accepted" in next(r for s, _, r in rows.values() if s == "uncertain")
    st = status("--list-uncertain")
    assert "per request" in st.stdout and st.stdout.count("uncertain\t") == 1000
    r = sg_send()  # the same command holds them back: no second copy
    assert r.exit_code == 0 and "held back: 1000" in r.stdout
    assert len(sink.requests) == 2
    assert accepted(sink) == Counter({e: 1 for e in emails})


def test_sendgrid_400_stops_with_sendgrids_message(nl, sendgrid):
    emails = addrs(4)
    write_list(nl, emails)
    sink = sendgrid(Reply(400, b'{"errors":[{"message":"The from address does not match a verified Sender '
                                b'Identity.","field":"from","help":null}]}'))
    r = sg_send()
    assert r.exit_code == 2
    line = one_error_line(r)
    assert "SendGrid rejected the request (400): The from address does not match a verified Sender Identity." in line
    assert "(field from)" in line
    assert accepted(sink) == Counter()
    assert all(s == "failed" and p == 0 for s, p, _ in ledger(nl).values())  # retried by the same command
    r = sg_send()  # fixed at SendGrid's end
    assert r.exit_code == 0, r.output
    assert accepted(sink) == Counter({e: 1 for e in emails})


@pytest.mark.parametrize("code", [401, 403])
def test_sendgrid_key_refused(nl, sendgrid, code):
    write_list(nl, addrs(3))
    sink = sendgrid(Reply(code, b'{"errors":[{"message":"access forbidden"}]}'))
    r = sg_send()
    assert r.exit_code == 2
    line = one_error_line(r)
    assert f"SendGrid refused the API key ({code}): access forbidden" in line
    assert "SENDGRID_API_KEY" in line
    assert API_KEY not in r.output and "planted-fault-key" not in r.output
    assert accepted(sink) == Counter()


def test_sendgrid_wrong_key_is_refused_by_the_server(nl, sendgrid, monkeypatch):
    write_list(nl, addrs(3))
    sink = sendgrid()
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY + "-wrong")
    r = sg_send()
    assert r.exit_code == 2
    assert "SendGrid refused the API key (401)" in one_error_line(r)
    assert API_KEY not in r.output
    assert accepted(sink) == Counter()


def test_sendgrid_413(nl, sendgrid):
    write_list(nl, addrs(3))
    sink = sendgrid(Reply(413, b'{"errors":[{"message":"request entity too large"}]}'))
    r = sg_send()
    assert r.exit_code == 2
    line = one_error_line(r)
    assert "request too large for SendGrid (413): request entity too large" in line
    assert "30 MB" in line
    assert accepted(sink) == Counter()


def test_sendgrid_error_budget_counts_a_failed_request_once_per_recipient(nl, sendgrid):
    set_delivery(nl, "max_consecutive_failures = 3")
    emails = addrs(5)
    write_list(nl, emails)
    sink = sendgrid(*[Reply(500)] * 5)
    r = sg_send()
    assert r.exit_code == 1
    assert "stopped after 5 failures in a row" in one_error_line(r)
    r = sg_send()
    assert r.exit_code == 0, r.output
    assert accepted(sink) == Counter({e: 1 for e in emails})
