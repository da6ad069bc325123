"""What a new user met following the README on a fresh clone (FX2a): send shows the check warnings
and an unpublished issue's broken web link, placeholder addresses are warned about, and the send
output says plainly what it counts and where the outbox put the messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_LIST
from newsletter_mailer.state import State

runner = CliRunner()


@pytest.fixture
def nl(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    shutil.copy(EXAMPLE_LIST, newsletter_dir / "subscribers.csv")
    return newsletter_dir


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_check_warns_about_placeholder_web_addresses(nl: Path):
    r = run("check", "issues/mini.yaml")
    assert r.exit_code == 0, r.output
    assert "web_base_url is on example.org, a placeholder domain" in r.output
    settings = (nl / "newsletter.toml").read_text(encoding="utf-8")
    (nl / "newsletter.toml").write_text(settings.replace('web_base_url = "https://example.org/newsletter"',
                                                         'web_base_url = "https://news.cscp.test/newsletter"')
                                        .replace('base_url = "https://example.org/news"',  # the example's [web]
                                                 'base_url = "https://www.example.com"'), encoding="utf-8")
    r = run("check", "issues/mini.yaml")
    assert "web_base_url is on" not in r.output
    assert "web.base_url is on www.example.com, a placeholder domain" in r.output


def test_send_shows_the_check_warnings_before_asking(nl: Path):
    for mode in ("--dry-run", "--yes"):
        r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", mode)
        assert r.exit_code == 0, r.output
        out = r.output
        assert "warning: web_base_url is on example.org" in out
        assert "warning: web.base_url is on example.org" in out  # token links: no unsubscribe_url warning
        assert "unsubscribe_url shows the address" not in out
        assert "(newsletter check issues/mini.yaml shows every check)" in out
        assert out.index("warning:") < out.index("would send" if mode == "--dry-run" else "sent:")


def test_send_warns_when_the_issue_is_dated_after_today(nl: Path):
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("date: 2020-09-01", "date: 2999-01-01"),
                     encoding="utf-8")
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run")
    assert r.exit_code == 0, r.output
    assert ("warning: the issue is dated 2999-01-01, after today: publish skips it unless --drafts, "
            "so its web copy link will not work until then") in r.output
    issue.write_text(issue.read_text(encoding="utf-8").replace("date: 2999-01-01", "date: 2020-09-01"),
                     encoding="utf-8")
    assert "after today" not in run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run").output


def test_outbox_summary_says_where_the_messages_went(nl: Path):
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--yes")
    assert r.exit_code == 0, r.output
    assert f"; written to {Path('outbox', 'mini')}/" in r.output
    assert (nl / "outbox" / "mini").is_dir()


def test_the_sign_ups_count_sits_next_to_what_it_qualifies(nl: Path):
    from newsletter_mailer.audience.store import Change

    store = State(nl / ".newsletter").audience()
    try:
        store.record([Change("new.reader@example.org", "subscribed", "form", name="New Reader")])
    finally:
        store.close()
    assert run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--yes").exit_code == 0
    store = State(nl / ".newsletter").audience()
    try:
        store.record([Change("second@example.org", "subscribed", "form")])
    finally:
        store.close()
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run")
    assert r.exit_code == 0, r.output
    sent = len(list((nl / "outbox" / "mini").glob("*.eml")))
    assert (f"recipients: 1 to send (1 of these is a confirmed sign-up from the audience store), "
            f"{sent} already sent") in r.output



def test_audience_sync_without_a_key_says_it_is_for_sendgrid_senders_in_one_plain_line(nl: Path, monkeypatch):
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    r = run("audience", "sync")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: SENDGRID_API_KEY is not set (only SendGrid senders need it: "
                                     "export a key with Suppressions read access)"]


def test_each_command_describes_its_own_list_and_default_folders():
    test_send = " ".join(run("test-send", "--help").stdout.split())
    send = " ".join(run("send", "--help").stdout.split())
    assert "--list CSV subscribers CSV to personalise from (optional" in test_send
    assert "needed" not in test_send and "needed" not in send
    assert "--list CSV subscribers CSV to send to (may be left out when the audience store has confirmed" in send
    for text in (send, test_send):
        assert "--outbox DIR outbox folder (default outbox/ next to newsletter.toml)" in text
    inbox = " ".join(run("inbox", "--help").stdout.split())
    assert "--mbox FILE" in inbox and "--maildir DIR" in inbox
