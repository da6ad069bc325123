"""`newsletter audience sync`: SendGrid's suppressions into the audience store, against a scripted
local HTTP server (paging, incremental start_time, 429, 5xx, 401) and SendGrid's contract (Prism)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from newsletter_mailer.audience import sendgrid_store
from newsletter_mailer.audience.store import Change
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.audience.sendgrid_sync import PAGE, UrllibFetch, sync
from tests.helpers.prism import prism_server
from tests.helpers.sendgrid_api import KEY, FakeSendGrid, Generated, serve
from newsletter_mailer.state import State

BOUNCES, SPAM, INVALID, BLOCKS, UNSUBS = (f"/v3/suppression/{n}" for n in
                                          ("bounces", "spam_reports", "invalid_emails", "blocks", "unsubscribes"))


@pytest.fixture
def fake():
    f = FakeSendGrid()
    server = serve(f)
    yield f
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path):
    s = State(tmp_path / "state").audience()
    yield s
    s.close()


def env_for(url: str, key: str = KEY) -> dict[str, str]:
    return {"SENDGRID_API_KEY": key, "SENDGRID_API_HOST": url, "NEWSLETTER_BACKOFF_BASE": "0.01"}


def with_group(settings, group_id: int):
    d = settings.delivery
    sg = d.sendgrid.model_copy(update={"asm_group_id": group_id})
    return settings.model_copy(update={"delivery": d.model_copy(update={"sendgrid": sg})})


def run(settings, store, fake, sleeps=None, **kw):
    return sync(settings, store, env_for(fake.url), sleep=(sleeps.append if sleeps is not None else lambda s: None),
                **kw)


def test_every_list_lands_with_its_status_reason_and_source(settings, store, fake):
    fake.lists = {
        BOUNCES: [{"created": 100, "email": "Gone@Example.com", "reason": "550 5.1.1 no such user", "status": "5.1.1"}],
        SPAM: [{"created": 100, "email": "angry@example.com", "ip": "10.0.0.1"}],
        INVALID: [{"created": 100, "email": "typo@exmaple.com", "reason": "Mail domain is unknown"}],
        BLOCKS: [{"created": 100, "email": "blocked@example.com", "reason": "IP on a blocklist", "status": "4.0.0"}],
        UNSUBS: [{"created": 100, "email": "left@example.com"}],
    }
    report = run(settings, store, fake)
    got = {e.email: (e.status, e.source) for e in store.rows()}
    assert got == {"gone@example.com": ("bounced", "sendgrid"), "angry@example.com": ("complained", "sendgrid"),
                   "typo@exmaple.com": ("bounced", "sendgrid"), "left@example.com": ("unsubscribed", "sendgrid")}
    assert store.status("gone@example.com").reason == "SendGrid bounces: 5.1.1 550 5.1.1 no such user"
    assert "Mail domain is unknown" in store.status("typo@exmaple.com").reason
    # a block is recorded, never suppressing
    assert store.status("blocked@example.com") is None
    assert sendgrid_store.blocks(store, "blocked@example.com") == [
        (100, "4.0.0", "SendGrid blocks: 4.0.0 IP on a blocklist")]
    assert report.changed == 5
    # every request carried the key as a Bearer token and asked for JSON pages
    assert all(auth == f"Bearer {KEY}" for _, _, auth in fake.requests)
    assert {q["limit"] for _, q, _ in fake.requests} == {str(PAGE)}


def test_pages_until_a_short_one_then_incremental_from_the_last_sync(settings, store, fake):
    fake.lists = {BOUNCES: Generated(2 * PAGE + 7, created=1_000)}
    report = run(settings, store, fake, clock=lambda: 5_000)
    assert [q["offset"] for p, q, _ in fake.requests if p == BOUNCES] == ["0", str(PAGE), str(2 * PAGE)]
    assert "start_time" not in fake.requests[0][1]
    assert report.lists[0].fetched == 2 * PAGE + 7 and report.lists[0].changed == 2 * PAGE + 7
    assert store.status(f"reader{2 * PAGE + 6}@example.com").status == "bounced"

    fake.requests.clear()
    fake.lists = {BOUNCES: [{"created": 6_000, "email": "new@example.com", "reason": "550", "status": "5.0.0"}]}
    report = run(settings, store, fake, clock=lambda: 7_000)
    assert {q.get("start_time") for _, q, _ in fake.requests} == {"5000"}
    assert store.status("new@example.com").status == "bounced"
    assert report.changed == 1


def test_an_entry_seen_twice_leaves_one_history_row(settings, store, fake):
    fake.lists = {BOUNCES: [{"created": 1, "email": "gone@example.com", "reason": "x", "status": "5.1.1"}]}
    run(settings, store, fake, clock=lambda: 1)
    fake.lists[BOUNCES].append({"created": 1, "email": "gone@example.com", "reason": "x", "status": "5.1.1"})
    assert run(settings, store, fake, clock=lambda: 2).changed == 0
    assert [h[:3] for h in store.history("gone@example.com")] == [("bounced", "sendgrid", 1)]


def test_a_sendgrid_unsubscribe_does_not_undo_a_bounce_but_a_bounce_overrides_an_unsubscribe(settings, store, fake):
    store.record([Change("a@example.com", "bounced", "mailbox"), Change("b@example.com", "unsubscribed", "link")])
    fake.lists = {UNSUBS: [{"created": 1, "email": "a@example.com"}],
                  BOUNCES: [{"created": 1, "email": "b@example.com", "reason": "gone", "status": "5.1.1"}]}
    run(settings, store, fake)
    assert store.status("a@example.com").status == "bounced"
    assert store.status("b@example.com").status == "bounced"


def test_rate_limit_waits_until_the_reset_time(settings, store, fake):
    import time

    reset = int(time.time()) + 3
    fake.script = [(429, {"X-RateLimit-Reset": str(reset)}, b'{"errors": [{"message": "too many"}]}')]
    fake.lists = {UNSUBS: [{"created": 1, "email": "left@example.com"}]}
    sleeps: list[float] = []
    run(settings, store, fake, sleeps)
    assert len(sleeps) == 1 and 1 < sleeps[0] <= 3
    assert store.status("left@example.com").status == "unsubscribed"
    assert [p for p, _, _ in fake.requests][:2] == [BOUNCES, BOUNCES]  # the same request again


def test_server_errors_back_off_then_succeed(settings, store, fake):
    fake.script = [(500, {}, b"oops"), (503, {}, b"")]
    fake.lists = {SPAM: [{"created": 1, "email": "angry@example.com"}]}
    sleeps: list[float] = []
    run(settings, store, fake, sleeps)
    assert sleeps == [0.01, 0.02]
    assert store.status("angry@example.com").status == "complained"


def test_server_errors_that_persist_stop_with_one_line_and_keep_what_was_synced(settings, store, fake):
    fake.lists = {BOUNCES: [{"created": 1, "email": "gone@example.com", "status": "5.1.1"}]}
    fake.script = [(200, {}, b'[{"created": 1, "email": "gone@example.com", "status": "5.1.1"}]')] + [
        (502, {}, b"bad gateway")] * 5
    with pytest.raises(NewsletterError) as caught:
        run(settings, store, fake)
    assert "502" in caught.value.message and "5 attempts" in caught.value.message
    assert store.status("gone@example.com").status == "bounced"
    assert sendgrid_store.since(store, "spam_reports") is None  # not synced: asked again from the start


def test_a_refused_key_is_one_line_without_the_key(settings, store, fake, monkeypatch):
    bad = "SG.wrong-key-that-must-not-show"
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    with pytest.raises(NewsletterError) as caught:
        sync(settings, store, env_for(fake.url, bad), sleep=lambda s: None)
    text = caught.value.format()
    assert "401" in text and "SENDGRID_API_KEY" in text and bad not in text and "\n" not in text
    assert len(fake.requests) == 1  # no retry of a refusal
    assert list(store.rows()) == []


def test_a_missing_key_or_plain_http_host_stops_before_any_request(settings, store, fake):
    with pytest.raises(NewsletterError, match="SENDGRID_API_KEY is not set"):
        sync(settings, store, {"SENDGRID_API_HOST": fake.url})
    with pytest.raises(NewsletterError, match="plain http"):
        sync(settings, store, {"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": "http://api.example.com"})
    assert fake.requests == []


def test_garbage_entries_are_skipped_and_a_non_list_answer_stops(settings, store, fake):
    fake.lists = {BOUNCES: [{"email": 7}, "x", {"created": 1, "email": "ok@example.com"}, {"email": "no-at"}]}
    run(settings, store, fake)
    assert [e.email for e in store.rows()] == ["ok@example.com"]
    fake.script = [(200, {}, b'{"not": "a list"}')]
    with pytest.raises(NewsletterError, match="not a JSON list"):
        run(settings, store, fake)


def test_the_asm_group_unsubscribes_are_read_whole(settings, store, fake):
    settings = with_group(settings, 42)
    fake.lists = {"/v3/asm/groups/42/suppressions": ["Group@Example.com", "other@example.com"]}
    report = run(settings, store, fake)
    assert {e.email: e.status for e in store.rows()} == {"group@example.com": "unsubscribed",
                                                         "other@example.com": "unsubscribed"}
    assert report.lists[-1].name == "group 42" and report.lists[-1].changed == 2
    assert run(settings, store, fake).changed == 0  # read again: nothing new, no new history
    assert len(store.history("group@example.com")) == 1


def test_the_cli_command_syncs_and_prints_a_summary(newsletter_dir, fake, monkeypatch):
    from newsletter_mailer.cli.audience_sync import register

    group = typer.Typer()
    register(group)
    group.command("noop")(lambda: None)  # a group with one command would run it without its name
    fake.lists = {BOUNCES: [{"created": 1, "email": "gone@example.com", "status": "5.1.1"}]}
    for k, v in env_for(fake.url).items():
        monkeypatch.setenv(k, v)
    config, state = newsletter_dir / "newsletter.toml", newsletter_dir / "state"
    result = CliRunner().invoke(group, ["sync", "--config", str(config), "--state", str(state)])
    assert result.exit_code == 0, result.output
    assert "bounces: 1 read, 1 changed" in result.output
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.not-the-right-one")
    result = CliRunner().invoke(group, ["sync", "--config", str(config), "--state", str(state)])
    assert result.exit_code == 2 and "SG.not-the-right-one" not in result.output
    assert result.output.count("\n") == 1 and "401" in result.output


@pytest.mark.slow
def test_against_sendgrids_contract(settings, store):
    """Prism checks every request against SendGrid's OpenAPI description and answers its examples."""
    settings = with_group(settings, 7)
    violations: list = []

    with prism_server() as url:
        real = UrllibFetch("SG.contract-test", url, 30)

        def fetch(path, query):
            status, headers, body = real(path, query)
            violations.append(headers.get("sl-violations"))
            return status, headers, body

        report = sync(settings, store, {"SENDGRID_API_KEY": "SG.contract-test", "SENDGRID_API_HOST": url},
                      fetch=fetch)
    assert len(violations) == 6 and not any(violations)  # every request as the contract describes it
    statuses = {e.email: e.status for e in store.rows()}
    # the spec's examples: bounces and invalid emails, spam reports, global and group unsubscribes
    assert statuses["example@example.com"] == "bounced"
    assert statuses["user1@example.com"] == "bounced"       # invalid email outranks a later unsubscribe
    assert statuses["example2@example.com"] == "unsubscribed"
    assert "5.1.1" in store.status("example@example.com").reason
    assert sendgrid_store.blocks(store, "example@example.com")[0][1] == "4.0.0"
    assert [r.name for r in report.lists] == ["bounces", "spam_reports", "invalid_emails", "blocks",
                                              "unsubscribes", "group 7"]


def test_sync_reads_our_group_only(settings, store, fake):
    """Another group's unsubscribes (the account's other lists) are never fetched nor recorded."""
    settings = with_group(settings, 42)
    fake.lists = {"/v3/asm/groups/42/suppressions": ["ours@example.com"],
                  "/v3/asm/groups/43/suppressions": ["theirs@example.com"],
                  "/v3/asm/suppressions": [{"email": "theirs@example.com", "group_id": 43, "group_name": "Other"}]}
    run(settings, store, fake)
    assert {e.email: e.status for e in store.rows()} == {"ours@example.com": "unsubscribed"}
    asked = {path for path, _, _ in fake.requests}
    assert "/v3/asm/groups/42/suppressions" in asked
    assert not any(p.startswith("/v3/asm/") and "/42/" not in p for p in asked)
