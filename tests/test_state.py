"""`newsletter state init|copy`, versioned schemas, and a PostgreSQL URL's rules (tests/helpers/postgres.py)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience.store import Change
from newsletter_mailer.cli import app
from newsletter_mailer.state.db import URL_ENV
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.migrations import MIGRATIONS, TABLES, version
from newsletter_mailer.providers.base import Outcome
from tests.conftest import EXAMPLE_SETTINGS
from tests.helpers.postgres import query
from newsletter_mailer.state import State

runner = CliRunner()


@pytest.fixture
def nl(tmp_path, monkeypatch):
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def a_state(folder) -> None:
    """A SQLite state with rows in the ledger, the store, its history, a rate bucket and SendGrid's tables."""
    from newsletter_mailer.audience import sendgrid_store
    from newsletter_mailer.sequences import members

    ledger = State(folder).ledger()
    ledger.begin("mini", ["a@example.org", "b@example.org", "c@example.org"], "smtp")
    ledger.finish("mini", [Outcome("a@example.org", True, "<1@x>"), Outcome("b@example.org", False, error="550")])
    ledger.add_schedule("mini", "batch-1", 1_900_000_000, "Europe/London")
    from newsletter_mailer import ab_test  # a subject test and a reader's variant

    ab_test.start(ledger.db, "mini", ab_test.Request("Other", 0.2), {"a@example.org": "B"}, 1_900_000_000)
    ledger.close()
    store = State(folder).audience()
    store.record([Change("u@example.org", "unsubscribed", "one-click", issue="mini"),
                  Change("s@example.org", "subscribed", "form", name="S")])
    store.hit("client:1.2.3.4", 5)
    with store.transaction():
        sendgrid_store.block(store, "b@example.org", 1_700_000_000, "sendgrid", "4.0.0", "greylisted", "mini")
        sendgrid_store.synced(store, "bounces", 1_700_000_000)
        sendgrid_store.first_time(store, "event-1")
        sendgrid_store.count(store, "mini", "click", "https://example.org/x")
    store.soft_bounces([("f@example.org", "mini", "452 4.2.2 mailbox full")], limit=3)
    store.mark_processed(["digest-1"])
    with store.transaction():
        members.enrol(store, "welcome", ["s@example.org"], 1_900_000_000)
    from newsletter_mailer.audience import clicks  # [tracking]: links, counts, a keyed hash, a reader's click

    clicks.store_links(store.db, "mini", ["https://example.org/x"])
    clicks.record(store.db, "mini", 1, "hash-1", scanner=False, now=1_700_000_000, email="u@example.org")
    from newsletter_mailer.audience import erasure  # a tombstone: an erased reader's keyed hash

    erasure.erase(store, None, "gone@example.org")
    store.close()


def test_sqlite_files_carry_their_schema_version(tmp_path):
    ledger, store = State(tmp_path).ledger(), State(tmp_path).audience()
    assert version(ledger.db, "ledger") == len(MIGRATIONS["ledger"])
    assert version(store.db, "audience") == len(MIGRATIONS["audience"])
    ledger.close(), store.close()


def test_a_send_against_an_uninitialised_database_stops_and_init_creates_the_schema(nl, pg_cluster):
    url = pg_cluster.new_database()
    (nl / "issues").mkdir()
    shutil.copy(EXAMPLE_SETTINGS.parent / "issues" / "2020-09-cscp.yaml", nl / "issues")
    result = cli("status", "issues/2020-09-cscp.yaml", env={URL_ENV: url})
    assert result.exit_code == 2 and "has no newsletter schema: run `newsletter state init`" in result.output
    assert query(url, "SELECT to_regclass('deliveries')") == [(None,)]  # never migrated silently
    first = cli("state", "init", env={URL_ENV: url})
    assert first.exit_code == 0, first.output
    assert "ledger: v0 → v4" in first.output and "audience: v0 → v5" in first.output
    again = cli("state", "init", env={URL_ENV: url})
    assert "ledger: v4, up to date" in again.output
    assert cli("status", "issues/2020-09-cscp.yaml", env={URL_ENV: url}).exit_code == 0


def test_copy_moves_every_table_and_verifies_the_counts(nl, pg_cluster):
    a_state(nl / ".newsletter")
    url = pg_cluster.new_database()
    result = cli("state", "copy", "--to", url)
    assert result.exit_code == 0, result.output
    expected = {"deliveries": 3, "schedules": 1, "audience": 2, "history": 2, "rate": 1, "blocks": 1,
                "sendgrid_sync": 1, "sendgrid_events": 1, "issue_events": 1, "issue_clicks": 1,
                "soft_bounces": 1, "processed": 1, "sequence_readers": 1, "tracked_links": 1, "link_counts": 2,
                "click_seen": 1,
                "reader_clicks": 1, "ab_tests": 1, "ab_variants": 1, "erased": 1,
                "erasure_key": 1}
    for table, n in expected.items():
        assert f"{table}: {n} row(s), verified" in result.output
        assert query(url, f"SELECT count(*) FROM {table}") == [(n,)]
    assert set(expected) == {t for tables in TABLES.values() for t in tables}
    ledger = State(nl, url).ledger()
    assert ledger.counts("mini")["sent"] == 1 and ledger.states("mini")["b@example.org"] == ("failed", False)
    ledger.close()
    store = State(nl, url).audience()
    store.record([Change("new@example.org", "unsubscribed", "link")])  # history ids continue past the copy
    assert [h[0] for h in store.history("u@example.org")] == ["unsubscribed"]
    store.close()

    refused = cli("state", "copy", "--to", url)
    assert refused.exit_code == 2 and "already has rows in deliveries" in refused.output
    forced = cli("state", "copy", "--to", url, "--force")
    assert forced.exit_code == 0 and query(url, "SELECT count(*) FROM history") == [(2,)]


def test_a_password_in_the_settings_or_on_the_command_line_is_refused(nl):
    with open(nl / "newsletter.toml", "a", encoding="utf-8") as f:
        f.write('\n[state]\ndatabase_url = "postgresql://news:hunter2@db.example.org/news"\n')
    result = cli("state", "init")
    assert result.exit_code == 2 and "the password only from PGPASSWORD or ~/.pgpass" in result.output
    assert "hunter2" not in result.output
    result = cli("state", "copy", "--to", "postgresql://news:hunter2@db.example.org/news", "--state", str(nl))
    assert result.exit_code == 2 and "hunter2" not in result.output


def test_an_unreachable_database_is_one_line_naming_host_and_port_never_the_password(nl, pg_cluster):
    port = pg_cluster.port + 1 if pg_cluster.port < 65535 else pg_cluster.port - 1
    url = f"postgresql://news:hunter2@127.0.0.1:{port}/news"
    with pytest.raises(NewsletterError) as caught:
        State(nl, url).ledger()
    assert caught.value.message.startswith(f"cannot reach the database at 127.0.0.1:{port}/news — ")
    assert "hunter2" not in caught.value.format()
    result = cli("state", "init", env={URL_ENV: url})
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "hunter2" not in result.output


def test_an_older_audience_schema_is_migrated_by_init_and_refused_before(nl, pg_cluster):
    """Versioned migrations: a database at audience v1 (before the inbox's tables) is refused by a
    send-side command until `state init` takes it to the latest, keeping its rows."""
    from newsletter_mailer.state import migrations
    from newsletter_mailer.state.db import Database

    url = pg_cluster.new_database()
    db = Database.postgres(url)
    with db.transaction():
        db.script(migrations.VERSIONS)
        db.script(migrations.LEDGER_V1)
        db.script(migrations.AUDIENCE_V1)
        db.execute("INSERT INTO schema_version (component, version, applied_at) VALUES ('ledger', 1, 'x'), "
                   "('audience', 1, 'x')")
        db.execute("INSERT INTO audience (email, status, source, updated_at) VALUES "
                   "('ann@example.org', 'unsubscribed', 'cli', 'x')")
    db.close()
    with pytest.raises(NewsletterError, match="state init"):
        State(nl, url).audience()
    result = cli("state", "init", env={URL_ENV: url})
    assert result.exit_code == 0 and "audience: v1 → v5" in result.output, result.output
    store = State(nl, url).audience()
    try:
        assert store.status("ann@example.org").status == "unsubscribed"
        assert store.soft_bounce_count("ann@example.org") == 0  # the v2 table is there
    finally:
        store.close()
