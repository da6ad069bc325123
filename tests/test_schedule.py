"""Scheduled sends (issue 14): `send --at`, `cancel`, `test-send --sandbox`.

Against a scripted SendGrid (tests/helpers/sendgrid_api.py, a real local HTTP server that
records every request) for what Prism cannot say (which batch id each request carried, what
was cancelled), and against SendGrid's own OpenAPI contract (Prism) for the shapes.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.schedule import parse_at
from newsletter_mailer.schema import slug_of
from newsletter_mailer.send import Options, Sender, prepare
from tests.helpers.prism import prism_server
from tests.helpers.sendgrid_api import KEY, FakeSendGrid, serve
from newsletter_mailer.state import State

pytest.importorskip("sendgrid")

runner = CliRunner()
UTC = timezone.utc
NOW = datetime(2026, 10, 23, 12, 0, tzinfo=UTC)   # two days before British Summer Time ends


@pytest.fixture
def fake():
    fake = FakeSendGrid()
    server = serve(fake)
    yield fake
    server.shutdown()


@pytest.fixture
def nl(newsletter_dir: Path) -> Path:
    write_list(newsletter_dir, 3)
    return newsletter_dir


def write_list(nl: Path, n: int) -> None:
    rows = "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(n))
    (nl / "subscribers.csv").write_text("email,name\n" + rows, encoding="utf-8")


def env_for(fake: FakeSendGrid) -> dict[str, str]:
    return {"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": fake.url, "NEWSLETTER_BACKOFF_BASE": "0"}


def options(nl: Path, fake: FakeSendGrid, **kw) -> Options:
    kw.setdefault("provider", "sendgrid")
    return Options(issue=nl / "issues" / "mini.yaml", list_path=nl / "subscribers.csv", state=nl / "state",
                   config=nl / "newsletter.toml", sync=False, env=env_for(fake), **kw)


def run_send(opts: Options):
    sender = Sender(prepare(opts))
    try:
        return sender.run(sender.plan())
    finally:
        sender.close()


def cli(nl: Path, fake: FakeSendGrid, *args: str):
    return runner.invoke(app, [*args, str(nl / "issues" / "mini.yaml"), "--config", str(nl / "newsletter.toml"),
                               "--state", str(nl / "state")], env=env_for(fake))


def send_cli(nl: Path, fake: FakeSendGrid, *extra: str, provider: str = "sendgrid"):
    return cli(nl, fake, "send", "--list", str(nl / "subscribers.csv"), "--provider", provider, "--yes",
               "--no-sync", *extra)


def ledger_rows(nl: Path) -> dict[str, str]:
    ledger = State(nl / "state").ledger()
    try:
        return {r.email: r.status for r in ledger.rows(slug_of(nl / "issues" / "mini.yaml"))}
    finally:
        ledger.close()


def in_hours(h: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# --- reading --at -------------------------------------------------------------------------

def test_a_london_time_becomes_utc_on_each_side_of_the_clocks_going_back():
    before = parse_at("2026-10-24 09:00", "Europe/London", None, NOW)   # BST, UTC+1
    after = parse_at("2026-10-26 09:00", "Europe/London", None, NOW)    # GMT, UTC+0
    assert before.unix == int(datetime(2026, 10, 24, 8, 0, tzinfo=UTC).timestamp())
    assert after.unix == int(datetime(2026, 10, 26, 9, 0, tzinfo=UTC).timestamp())
    assert before.describe() == "Sat 24 Oct 2026 09:00 BST (Europe/London) = 2026-10-24 08:00 UTC"


def test_iso_with_an_offset_keeps_it_and_the_settings_zone_is_the_default():
    assert parse_at("2026-10-24T09:00+02:00", None, None, NOW).unix == int(
        datetime(2026, 10, 24, 7, 0, tzinfo=UTC).timestamp())
    assert parse_at("2026-10-24 09:00", None, "America/New_York", NOW).unix == int(
        datetime(2026, 10, 24, 13, 0, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("at, tz, words", [
    ("next monday", None, "cannot read the time"),
    ("2026-10-24 09:00", "Europe/Londn", "unknown time zone 'Europe/Londn'"),
    ("2026-10-22 09:00", "Europe/London", "is in the past"),
    ("2027-03-28 01:30", "Europe/London", "does not exist in Europe/London"),
])
def test_unreadable_unknown_past_and_skipped_times_are_refused(at, tz, words):
    with pytest.raises(NewsletterError, match=words):
        parse_at(at, tz, None, NOW)


def test_tz_without_at_is_refused(nl, fake):
    r = send_cli(nl, fake, "--tz", "Europe/London")
    assert r.exit_code == 2 and "--tz without --at" in r.stderr and fake.requests == []


def test_a_bad_timezone_setting_is_refused_when_the_settings_load(nl, fake):
    text = (nl / "newsletter.toml").read_text()
    (nl / "newsletter.toml").write_text('timezone = "Mars/Olympus"\n' + text)
    r = send_cli(nl, fake, "--at", in_hours(2))
    assert r.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in r.stderr and fake.mail == []


# --- SendGrid holds the mail: batch id and send_at on every request ------------------------

def test_every_request_of_a_2500_recipient_send_carries_one_batch_id_and_send_at_in_utc(nl, fake):
    write_list(nl, 2500)
    summary = run_send(options(nl, fake, at="2026-10-26 09:00", tz="Europe/London", now=lambda: NOW))
    assert summary.sent == 2500 and summary.failed == 0
    assert len(fake.mail) == 3 and len(fake.batches) == 1
    send_at = int(datetime(2026, 10, 26, 9, 0, tzinfo=UTC).timestamp())   # GMT by then: 09:00 UTC
    assert [(b["batch_id"], b["send_at"]) for b in fake.mail] == [(fake.batches[0], send_at)] * 3
    rows = ledger_rows(nl)
    assert len(rows) == 2500 and set(rows.values()) == {"scheduled"}
    ledger = State(nl / "state").ledger()
    assert ledger.schedules("mini") == [(fake.batches[0], send_at, 2500, "Europe/London")]
    ledger.close()


def test_a_re_run_does_not_send_the_scheduled_again_and_status_shows_the_time(nl, fake):
    r = send_cli(nl, fake, "--at", in_hours(2), "--tz", "Europe/London")
    assert r.exit_code == 0, r.stderr
    assert "scheduled: " in r.stdout and "(Europe/London) = " in r.stdout and "scheduled: 3 for" in r.stdout
    again = send_cli(nl, fake, "--at", in_hours(3))
    assert again.exit_code == 0 and "every subscriber on the list has had this issue" in again.stdout
    assert len(fake.mail) == 1
    status = cli(nl, fake, "status")
    assert status.exit_code == 0 and "scheduled 3" in status.stdout
    assert "scheduled: 3 for " in status.stdout and "(Europe/London) = " in status.stdout


def test_more_than_72_hours_ahead_is_refused_before_anything_is_sent(nl, fake):
    run_send(options(nl, fake, at=(NOW + timedelta(hours=72)).isoformat(), now=lambda: NOW, dry_run=True))
    with pytest.raises(NewsletterError, match="SendGrid holds scheduled mail for at most 72 hours"):
        prepare(options(nl, fake, at=(NOW + timedelta(hours=72, minutes=1)).isoformat(), now=lambda: NOW))
    r = send_cli(nl, fake, "--at", in_hours(72 + 1 / 60))
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "72 hours" in r.stderr
    assert fake.requests == [] and not (nl / "state" / "ledger.sqlite3").exists()


# --- cancel ---------------------------------------------------------------------------------

def test_cancel_cancels_the_batch_and_a_re_run_sends_again_only_on_purpose(nl, fake):
    assert send_cli(nl, fake, "--at", in_hours(5)).exit_code == 0
    r = cli(nl, fake, "cancel")
    assert r.exit_code == 0, r.stderr
    assert fake.cancels == [{"batch_id": fake.batches[0], "status": "cancel"}]
    assert "cancelled: 3 recipient(s) scheduled for" in r.stdout and "--resend-cancelled" in r.stdout
    assert set(ledger_rows(nl).values()) == {"cancelled"}
    assert "cancelled 3" in cli(nl, fake, "status").stdout
    refused = send_cli(nl, fake)
    assert refused.exit_code == 2 and "--resend-cancelled" in refused.stderr and len(fake.mail) == 1
    again = send_cli(nl, fake, "--resend-cancelled")
    assert again.exit_code == 0, again.stderr
    assert len(fake.mail) == 2 and "batch_id" not in fake.mail[1] and set(ledger_rows(nl).values()) == {"sent"}
    assert cli(nl, fake, "cancel").stdout.endswith("nothing scheduled to cancel\n")


def test_cancel_after_the_time_says_what_already_went_and_fails(nl, fake):
    real_now = datetime.now(UTC)
    run_send(options(nl, fake, at=(real_now - timedelta(hours=1)).isoformat(),
                     now=lambda: real_now - timedelta(hours=3)))
    r = cli(nl, fake, "cancel")
    assert r.exit_code == 1
    assert "already went: 3 recipient(s) at" in r.stdout and "SendGrid delivered them" in r.stdout
    assert fake.cancels == [] and set(ledger_rows(nl).values()) == {"scheduled"}


def test_cancel_with_nothing_scheduled_says_so(nl, fake):
    assert send_cli(nl, fake).exit_code == 0
    r = cli(nl, fake, "cancel")
    assert r.exit_code == 0 and "mini: nothing scheduled to cancel" in r.stdout and fake.cancels == []


def test_a_refused_cancel_leaves_the_rows_scheduled(nl, fake):
    assert send_cli(nl, fake, "--at", in_hours(5)).exit_code == 0
    fake.cancels.append({"batch_id": fake.batches[0], "status": "cancel"})  # SendGrid has it cancelled already
    r = cli(nl, fake, "cancel")
    assert r.exit_code == 2 and "batch already cancelled" in r.stderr and KEY not in r.stderr
    assert set(ledger_rows(nl).values()) == {"scheduled"}


# --- a ledger from before scheduling ------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE deliveries (
    issue TEXT NOT NULL, email TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'uncertain')),
    provider TEXT, message_id TEXT, reason TEXT, permanent INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL, PRIMARY KEY (issue, email)
) WITHOUT ROWID;
CREATE INDEX deliveries_status ON deliveries (issue, status);
"""


def test_an_old_ledger_opens_keeps_its_rows_and_takes_scheduled_sends(nl, fake):
    (nl / "state").mkdir(mode=0o700)
    db = sqlite3.connect(nl / "state" / "ledger.sqlite3")
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO deliveries VALUES ('mini', 'reader0@example.org', 'sent', 'sendgrid', 'm0', NULL, 0, 1, "
               "'2024-01-01T00:00:00+00:00')")
    db.execute("INSERT INTO deliveries VALUES ('mini', 'reader1@example.org', 'failed', 'sendgrid', NULL, "
               "'refused', 1, 2, '2024-01-01T00:00:00+00:00')")
    db.commit()
    db.close()
    r = send_cli(nl, fake, "--at", in_hours(2))
    assert r.exit_code == 0, r.stderr
    assert ledger_rows(nl) == {"reader0@example.org": "sent", "reader1@example.org": "failed",
                               "reader2@example.org": "scheduled"}
    ledger = State(nl / "state").ledger()
    [failed] = ledger.rows("mini", "failed")
    assert (failed.reason, failed.permanent, failed.attempts) == ("refused", True, 2)
    ledger.close()
    assert cli(nl, fake, "cancel").exit_code == 0
    assert ledger_rows(nl)["reader2@example.org"] == "cancelled"


# --- outbox and SMTP cannot hold mail ------------------------------------------------------

@pytest.mark.parametrize("provider", ["outbox", "smtp"])
def test_outbox_and_smtp_refuse_at_and_print_the_cron_and_systemd_lines(nl, fake, provider, monkeypatch):
    monkeypatch.chdir(nl)
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "subscribers.csv", "--provider", provider,
                            "--at", "2036-12-07 09:00", "--tz", "Europe/London"],
                      env={"SMTP_HOST": "127.0.0.1"})
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1
    assert "cannot hold mail until a time: --at needs SendGrid" in r.stderr
    lines = r.stdout.splitlines()
    cron = next(line for line in lines if not line.startswith("#") and "cd " in line)
    assert cron.split()[2:5] == ["7", "12", "*"]
    assert f"cd {nl} && /" in cron
    command = f"send issues/mini.yaml --list subscribers.csv --provider {provider} --yes"
    assert cron.endswith(command) and "--at" not in cron
    assert "OnCalendar=2036-12-07 09:00:00 UTC" in lines
    assert f"WorkingDirectory={nl}" in lines
    [exec_start] = [line for line in lines if line.startswith("ExecStart=/")]
    assert exec_start.endswith(command) and Path(exec_start[len("ExecStart="):].split()[0]).is_absolute()
    assert not (nl / "outbox").exists()


# --- test-send --sandbox --------------------------------------------------------------------

def test_sandbox_asks_sendgrid_to_validate_only(nl, fake):
    r = cli(nl, fake, "test-send", "--provider", "sendgrid", "--sandbox")
    assert r.exit_code == 0, r.stderr
    assert "validated by SendGrid (sandbox: nothing delivered)" in r.stdout
    [body] = fake.mail
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_sandbox_is_refused_for_other_providers(nl, fake):
    r = cli(nl, fake, "test-send", "--provider", "outbox", "--sandbox")
    assert r.exit_code == 2 and "--sandbox" in r.stderr and "outbox has none" in r.stderr
    assert not list(nl.glob("outbox/**/*.eml")) and fake.requests == []


# --- SendGrid's contract (Prism) -----------------------------------------------------------

@pytest.fixture(scope="module")
def prism_url():
    with prism_server() as url:
        yield url


def test_batch_scheduled_send_cancel_and_sandbox_meet_sendgrids_contract(prism_url, composed):
    from newsletter_mailer.providers.base import Recipient
    from newsletter_mailer.providers.sendgrid import Api, ClientTransport, SendGridProvider
    from newsletter_mailer.send import send_context

    env = {"SENDGRID_API_KEY": "SG.contract", "SENDGRID_API_HOST": prism_url, "NEWSLETTER_BACKOFF_BASE": "0"}
    filler = composed.filler()
    batch = [Recipient(f"r{i}@example.org", "R", filler.values(f"r{i}@example.org", "R", {}, "https://x.example/u"))
             for i in range(3)]
    provider = SendGridProvider(send_context(composed, env=env))
    posted = []
    provider.open()
    inner = provider.transport
    provider.transport = lambda body: posted.append(json.loads(json.dumps(body))) or inner(body)
    batch_id = provider.schedule(int((NOW + timedelta(hours=2)).timestamp()))
    assert batch_id
    assert all(o.ok for o in provider.send(batch))
    assert posted[0]["batch_id"] == batch_id and posted[0]["send_at"] == int((NOW + timedelta(hours=2)).timestamp())
    client = ClientTransport("SG.contract", prism_url, 5)
    Api(client.post, "SG.contract").cancel(batch_id)
    assert client.post("user/scheduled_sends", {"batch_id": batch_id, "status": "stop"})[0] in (400, 422)
    provider.use_sandbox()
    assert all(o.ok for o in provider.send(batch))
    assert posted[1]["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_a_scheduled_send_with_variants_holds_every_variants_requests_in_one_batch(nl, fake):
    """for: on a section makes a provider per variant: each joins the send's one batch."""
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace(
        "  - heading: Second\n", "  - heading: Second\n    for: {tags: [parents]}\n"), encoding="utf-8")
    (nl / "subscribers.csv").write_text("email,name,tags\n" + "".join(
        f"r{i}@example.org,R,{'parents' if i % 2 else ''}\n" for i in range(10)), encoding="utf-8")
    summary = run_send(options(nl, fake, at="2026-10-26 09:00", tz="Europe/London", now=lambda: NOW))
    assert summary.sent == 10 and len(fake.batches) == 1 and len(fake.mail) == 2
    send_at = int(datetime(2026, 10, 26, 9, 0, tzinfo=UTC).timestamp())
    assert [(b["batch_id"], b["send_at"]) for b in fake.mail] == [(fake.batches[0], send_at)] * 2
    assert sorted(len(b["personalizations"]) for b in fake.mail) == [5, 5]
