"""A SendGrid send pulls SendGrid's suppressions into the store first (issue 12), so nobody
suppressed at SendGrid is even attempted; --no-sync skips it; a refused key stops the send
before anything goes out."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.helpers.sendgrid_api import KEY, FakeSendGrid, serve

runner = CliRunner()
LIST = "email,name\nann@example.org,Ann\nbob@example.org,Bob\ncat@example.org,Cat\n"


@pytest.fixture
def sendgrid():
    fake = FakeSendGrid({"/v3/suppression/bounces": [
        {"created": 1_700_000_000, "email": "bob@example.org", "reason": "550 5.1.1 unknown", "status": "5.1.1"}]})
    server = serve(fake)
    yield fake
    server.shutdown()


@pytest.fixture
def nl(newsletter_dir: Path) -> Path:
    (newsletter_dir / "subscribers.csv").write_text(LIST, encoding="utf-8")
    return newsletter_dir


def _send(nl: Path, fake: FakeSendGrid, *extra: str, key: str = KEY):
    env = {"SENDGRID_API_KEY": key, "SENDGRID_API_HOST": fake.url, "NEWSLETTER_BACKOFF_BASE": "0"}
    return runner.invoke(app, ["send", str(nl / "issues" / "mini.yaml"), "--config", str(nl / "newsletter.toml"),
                               "--list", str(nl / "subscribers.csv"), "--provider", "sendgrid", "--yes",
                               "--state", str(nl / "state"), *extra], env=env)


def _recipients(fake: FakeSendGrid) -> set[str]:
    return {to["email"] for body in fake.mail for p in body["personalizations"] for to in p["to"]}


def test_a_sendgrid_send_syncs_first_and_skips_what_sendgrid_suppressed(nl, sendgrid):
    r = _send(nl, sendgrid)
    assert r.exit_code == 0, r.stderr
    assert "synced SendGrid's suppressions first: 1 change(s) recorded" in r.stdout
    assert any(path == "/v3/suppression/bounces" for path, _, _ in sendgrid.requests)
    assert _recipients(sendgrid) == {"ann@example.org", "cat@example.org"}
    assert "bounced" in r.stdout  # the skip is counted by reason


def test_no_sync_sends_without_asking_sendgrid(nl, sendgrid):
    r = _send(nl, sendgrid, "--no-sync")
    assert r.exit_code == 0, r.stderr
    assert not any(path.startswith("/v3/suppression/") for path, _, _ in sendgrid.requests)
    assert _recipients(sendgrid) == {"ann@example.org", "bob@example.org", "cat@example.org"}


def test_a_key_without_suppression_access_is_said_and_the_send_goes_on(nl, sendgrid):
    """A Mail-Send-only key gets 403 on the suppression lists: SendGrid still drops what it
    suppressed, so the send goes on and says why nothing was synced."""
    sendgrid.script = [(403, {}, b'{"errors": [{"message": "access forbidden"}]}')]
    r = _send(nl, sendgrid)
    assert r.exit_code == 0, r.stderr
    assert "SendGrid's suppressions not synced" in r.stdout and "--no-sync" in r.stdout
    assert _recipients(sendgrid) == {"ann@example.org", "bob@example.org", "cat@example.org"}


def test_a_sync_that_fails_otherwise_stops_before_anything_is_sent(nl, sendgrid):
    sendgrid.script = [(500, {}, b"{}")] * 5
    r = _send(nl, sendgrid)
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "--no-sync" in r.stderr and KEY not in r.stderr
    assert sendgrid.mail == []
