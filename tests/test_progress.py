"""Progress without a terminal: send, inbox and audience sync print a plain line at most every 10
seconds when stdout is a log (cron, systemd, CI). The clock is a fake one: no test waits."""

from __future__ import annotations

import io
import mailbox
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.cli import progress as progress_mod
from newsletter_mailer.cli.progress import ProgressLines, progress

runner = CliRunner()


class FakeClock:
    """Each reading is `step` seconds after the one before."""

    def __init__(self, step: float):
        self.t, self.step = 1000.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_line_at_most_every_ten_seconds():
    now = [0.0]
    lines: list[str] = []
    p = ProgressLines("sending", 1000, "messages", clock=lambda: now[0], write=lines.append)
    for _ in range(9):  # 9 s: nothing yet, a short send prints nothing
        now[0] += 1
        p.advance(10)
    assert lines == []
    now[0] += 1
    p.advance(10)  # 10 s, 100 done
    assert lines == ["sending: 100 of 1,000 messages (10%), 10.0 a second"]
    for _ in range(95):  # a burst of steps in the same second: still one line
        p.advance(1)
    assert len(lines) == 1
    now[0] = 25.0
    p.advance(5)
    assert lines[-1] == "sending: 200 of 1,000 messages (20%), 8.0 a second"
    now[0] = 34.9
    p.advance(1)
    assert len(lines) == 2


def test_without_a_total_it_counts_and_gives_the_rate():
    now = [0.0]
    lines: list[str] = []
    p = ProgressLines("syncing", None, "entries", clock=lambda: now[0], write=lines.append)
    now[0] = 12.5
    p.advance(1500)
    assert lines == ["syncing: 1,500 entries, 120.0 a second"]


def test_a_log_gets_plain_lines_and_a_terminal_the_bar():
    clock = FakeClock(11)
    with progress("reading", 500, "messages", stream=io.StringIO(), clock=clock) as advance:
        assert advance is not None and advance.__self__.clock is clock  # ProgressLines.advance
    with progress("reading", 50, "messages", min_total=100, stream=Tty()) as advance:
        assert advance is None  # short run on a terminal: no bar, as before
    with progress("syncing", None, "entries", stream=Tty()) as advance:
        assert advance is None


LINE = re.compile(r"^(\w+): ([\d,]+)( of [\d,]+)? (\w+)( \(\d+%\))?, [\d,.]+ a second$")


def _progress_lines(output: str, label: str) -> list[str]:
    found = [l for l in output.splitlines() if l.startswith(label + ":")]
    assert all(LINE.match(l) for l in found), found
    return found


def test_send_to_a_log_prints_progress_lines(newsletter_dir: Path, monkeypatch):
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "bjV5-5bwiedWu1OB7rFmLqTI2tO4z8IUl4_D7XSI-sA")
    monkeypatch.setattr(progress_mod, "CLOCK", FakeClock(6))  # each batch of 100 "takes" 6 s
    (newsletter_dir / "list.csv").write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(250)))
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    # Readings at 6 s (100 done), 12 s (200: a line, 10 s passed), 18 s (250: only 6 s since the line).
    assert _progress_lines(r.output, "sending") == ["sending: 200 of 250 messages (80%), 16.7 a second"]
    assert "sent: 250" in r.output


def test_inbox_to_a_log_prints_progress_lines(newsletter_dir: Path, monkeypatch):
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setattr(progress_mod, "CLOCK", FakeClock(11))
    box = mailbox.mbox(newsletter_dir / "in.mbox")
    forged = (b"From: MAILER-DAEMON@example.net\r\nTo: bounces+AAAAAAAAAAAAAAAAAAAAAAAAAA@example.org\r\n"
              b"Subject: Undelivered Mail\r\n\r\n<r1@example.com>: 550 5.1.1 User unknown\r\n")
    for i in range(250):  # human replies, with a forged bounce among them: read, left alone
        box.add(f"From: r{i}@example.com\r\nSubject: thanks {i}\r\n\r\nhello\r\n".encode() if i != 7 else forged)
    box.flush()
    box.close()
    r = runner.invoke(app, ["inbox", "--mbox", "in.mbox"])
    assert r.exit_code == 0, r.output
    assert "recorded: 0 bounced" in r.output, r.output  # the forged one changed nothing
    assert _progress_lines(r.output, "reading") == ["reading: 200 of 250 messages (80%), 18.2 a second",
                                                    "reading: 250 of 250 messages (100%), 11.4 a second"]


def test_audience_sync_to_a_log_prints_progress_lines(newsletter_dir: Path, monkeypatch):
    from newsletter_mailer.cli.audience_sync import register
    from tests.helpers.sendgrid_api import KEY, FakeSendGrid, Generated, serve

    fake = FakeSendGrid()
    server = serve(fake)
    try:
        fake.lists = {"/v3/suppression/bounces": Generated(1200)}
        for k, v in {"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": fake.url, "NEWSLETTER_BACKOFF_BASE": "0.01"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(progress_mod, "CLOCK", FakeClock(4))
        group = typer.Typer()
        register(group)
        group.command("noop")(lambda: None)
        r = runner.invoke(group, ["sync", "--config", str(newsletter_dir / "newsletter.toml"),
                                  "--state", str(newsletter_dir / "state")])
    finally:
        server.shutdown()
        server.server_close()
    assert r.exit_code == 0, r.output
    # Pages of 500, 500, 200 bounces, then four empty lists: a reading each, 4 s apart (12 s, 24 s).
    assert _progress_lines(r.output, "syncing") == ["syncing: 1,200 entries, 100.0 a second",
                                                    "syncing: 1,200 entries, 50.0 a second"]
    assert "bounces: 1200 read" in r.output
