"""`[delivery.smtp] connections = N`: several SMTP connections at once, each message still sent
once and recorded, and a relay that wants fewer connections respected (421, "too many
connections"). Through the CLI's `send`, against an aiosmtpd server that answers every
command late (tests/helpers/slow_smtp.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter_mailer.providers import Outcome
from newsletter_mailer.send import Options, Plan, Sender, Summary, prepare

from tests.helpers.slow_smtp import SlowSmtp
from tests.test_faults import PW, USER, Smtp, addrs, ledger, nl, one_error_line, send, set_delivery, smtpd, \
    state_db, write_list  # noqa: F401 - fixtures

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def use(monkeypatch, server: SlowSmtp, connections: int | None = None) -> None:
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(server.port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    if connections is not None:
        monkeypatch.setenv("SMTP_CONNECTIONS", str(connections))


def with_connections(folder, n: int) -> None:
    p = folder / "newsletter.toml"
    text = p.read_text(encoding="utf-8")
    assert text.count("[delivery.smtp]\n") == 1
    p.write_text(text.replace("[delivery.smtp]\n", f"[delivery.smtp]\nconnections = {n}\n"), encoding="utf-8")


def test_four_connections_each_message_once(nl, state_db, monkeypatch):
    emails = addrs(40)
    write_list(nl, emails)
    with_connections(nl, 4)
    with SlowSmtp(latency=0.005) as server:
        use(monkeypatch, server)
        r = send()
    assert r.exit_code == 0, r.output
    assert "sent: 40, failed: 0, uncertain: 0" in r.stdout
    assert server.counts() == Counter({e: 1 for e in emails})
    assert server.sessions == 4 and server.most == 4  # four connections, used side by side
    rows = ledger(nl)
    assert {e: s for e, (s, _, _) in rows.items()} == {e: "sent" for e in emails}
    assert "connections" not in r.stdout  # nothing to say: the relay took them all


def test_one_connection_is_still_the_default(nl, monkeypatch):
    emails = addrs(5)
    write_list(nl, emails)
    with SlowSmtp() as server:
        use(monkeypatch, server)
        r = send()
    assert r.exit_code == 0, r.output
    assert server.sessions == 1 and server.counts() == Counter({e: 1 for e in emails})


def test_a_relay_that_takes_four_gets_four_and_it_is_said_once(nl, state_db, monkeypatch):
    emails = addrs(30)
    write_list(nl, emails)
    with SlowSmtp(latency=0.002, limit=4) as server:
        use(monkeypatch, server, connections=8)
        r = send()
    assert r.exit_code == 0, r.output
    assert "sent: 30, failed: 0, uncertain: 0" in r.stdout
    assert server.counts() == Counter({e: 1 for e in emails})
    assert server.refused == 4 and server.most <= 8
    notes = [line for line in r.stdout.splitlines() if "too many" in line]
    assert len(notes) == 1 and "4 of 8 connections" in notes[0], r.stdout
    assert {s for s, _, _ in ledger(nl).values()} == {"sent"}


class Busy421(Smtp):
    """421 "too many connections" to the RCPT of one address, once: that connection is given up."""

    victim: str = ""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.victim and self.rcpt[address] == 0:
            self.rcpt[address] += 1
            return "421 4.7.0 too many concurrent connections, closing"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def test_a_421_mid_send_closes_that_connection_and_the_message_goes_on_another(nl, state_db, smtpd, monkeypatch):
    emails = addrs(20)
    write_list(nl, emails)
    h = Busy421()
    h.victim = emails[6]
    smtpd(h)
    monkeypatch.setenv("SMTP_CONNECTIONS", "3")
    r = send()
    assert r.exit_code == 0, r.output
    assert "sent: 20, failed: 0, uncertain: 0" in r.stdout
    assert h.counts() == Counter({e: 1 for e in emails})
    assert h.rcpt[emails[6]] == 2  # refused once, then sent on another connection
    notes = [line for line in r.stdout.splitlines() if "one too many" in line]
    assert len(notes) == 1 and "2 of 3 connections" in notes[0], r.stdout
    assert {s for s, _, _ in ledger(nl).values()} == {"sent"}


def test_the_failure_budget_counts_across_connections(nl, state_db, smtpd, monkeypatch):
    set_delivery(nl, "max_consecutive_failures = 3")
    emails = addrs(40)
    write_list(nl, emails)
    h = Smtp(all_tempfail=True)
    smtpd(h)
    monkeypatch.setenv("SMTP_CONNECTIONS", "4")
    r = send()
    assert r.exit_code == 1, r.output
    assert "stopped after" in one_error_line(r)
    rows = ledger(nl)
    # three in a row stop it; those already out on the other connections finish first
    assert 3 <= len(rows) <= 3 + 3 and all(s == "failed" for s, _, _ in rows.values())
    assert len(rows) < len(emails)
    h.all_tempfail = False
    r = send()
    assert r.exit_code == 0, r.output
    assert h.counts() == Counter({e: 1 for e in emails})


def _auth_counting(tries: list[bytes]):
    def auth(server, session, envelope, mechanism, auth_data):
        tries.append(auth_data.login if isinstance(auth_data, LoginPassword) else b"?")
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() \
            and auth_data.password == PW.encode()
        return AuthResult(success=ok, handled=False)
    return auth


@pytest.mark.parametrize("password", [PW, PW + "-wrong"])
def test_one_login_per_connection_and_a_wrong_password_tried_once(nl, monkeypatch, password):
    emails = addrs(12)
    write_list(nl, emails)
    tries: list[bytes] = []
    with SlowSmtp(authenticator=_auth_counting(tries), auth_required=True, auth_require_tls=False) as server:
        use(monkeypatch, server, connections=4)
        monkeypatch.setenv("SMTP_USERNAME", USER)
        monkeypatch.setenv("SMTP_PASSWORD", password)
        r = send()
    if password == PW:
        assert r.exit_code == 0, r.output
        assert len(tries) == server.sessions == 4
        assert server.counts() == Counter({e: 1 for e in emails})
    else:
        assert "refused" in one_error_line(r) and PW not in r.output
        assert len(tries) == 1 and server.received == [] and ledger(nl) == {}


@pytest.mark.parametrize("value", ["0", "17", "four", "-1", "2.5", "1e1", "٣"])
def test_smtp_connections_out_of_range_is_one_line(nl, monkeypatch, value):
    write_list(nl, addrs(2))
    with SlowSmtp() as server:
        use(monkeypatch, server)
        monkeypatch.setenv("SMTP_CONNECTIONS", value)
        r = send()
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert "SMTP_CONNECTIONS" in line and "1 to 16" in line
    assert server.sessions == 0 and ledger(nl) == {}


@pytest.mark.parametrize("value, says", [("0", "greater than or equal to 1"), ("17", "less than or equal to 16"),
                                         ('"many"', "valid integer")])
def test_connections_setting_out_of_range_is_one_line(nl, value, says):
    write_list(nl, addrs(2))
    with_connections(nl, value)
    r = send()
    assert r.exit_code == 2, r.output
    line = one_error_line(r)
    assert "delivery.smtp.connections" in line and says in line


def test_progress_counts_every_connection(nl, monkeypatch):
    """What the progress bar is told adds up to the list, whichever connection carried each message."""
    emails = addrs(25)
    write_list(nl, emails)
    with SlowSmtp(latency=0.002) as server:
        use(monkeypatch, server, connections=4)
        p = prepare(Options(issue=Path("issues/mini.yaml"), list_path=Path("subs.csv"), provider="smtp",
                            env=dict(os.environ)))
        sender = Sender(p)
        try:
            plan = sender.plan()
            told: list[int] = []
            summary = sender.run(plan, told.append)
        finally:
            sender.close()
    assert sum(told) == plan.to_send == summary.sent == 25 and len(told) == 25
    assert server.sessions == 4 and server.counts() == Counter({e: 1 for e in emails})


def test_failures_in_a_row_are_counted_in_the_order_outcomes_arrive():
    total = Summary(plan=Plan(), provider="smtp")
    for outcomes in ([Outcome("a", False, error="451")], [Outcome("b", False, error="550", permanent=True)],
                     [Outcome("c", True)], [Outcome("d", False, error="451")], [Outcome("e", False, error="451")]):
        part = Summary(plan=total.plan, provider="smtp")
        part.count(outcomes)
        total.add(part)
    assert (total.sent, total.failed, total.in_a_row, total.refused_in_a_row) == (1, 4, 2, 0)
    assert [e for e, _ in total.failures] == ["a", "b", "d", "e"]
    part = Summary(plan=total.plan, provider="smtp")
    part.count([Outcome("f", False, error="550", permanent=True)])
    total.add(part)
    assert (total.in_a_row, total.refused_in_a_row) == (3, 1)


class FakeClock:
    """send.py's clock: time passes only when the pace sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def test_rate_is_a_total_across_connections(nl, monkeypatch):
    set_delivery(nl, "rate = 10\nmax_consecutive_failures = 10")
    emails = addrs(21)
    write_list(nl, emails)
    clock = FakeClock()
    monkeypatch.setattr("newsletter_mailer.send.time", clock)
    with SlowSmtp() as server:
        use(monkeypatch, server, connections=4)
        r = send()
    assert r.exit_code == 0, r.output
    assert server.counts() == Counter({e: 1 for e in emails}) and server.sessions == 4
    # 21 messages at 10 a second in all: the last starts 2 s after the first (not 0.5 s: 10 a connection)
    assert clock.slept == pytest.approx(2.0)
