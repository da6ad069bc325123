"""The audience store: precedence, history, imports, files on disk, and the per-batch query's cost."""

from __future__ import annotations

import os
import sqlite3
import stat
import time

import pytest

from newsletter_mailer.audience.store import Change
from newsletter_mailer.audience.imports import import_export, read_export
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state import State


@pytest.fixture
def store(tmp_path, database_url):
    s = State(tmp_path / "state", database_url).audience()
    yield s
    s.close()


def now_status(store, address):
    entry = store.status(address)
    return entry.status if entry else None


def test_unsubscribe_then_confirmed_sign_up_again_keeps_history(store):
    store.record([Change("Ann@Example.org", "pending", "form", name="Ann")])
    store.record([Change("ann@example.org", "subscribed", "form", name="Ann")])
    store.record([Change("ann@example.org", "unsubscribed", "one-click", issue="2020-09")])
    assert now_status(store, "ANN@example.org") == "unsubscribed"
    assert store.status("ann@example.org").issue == "2020-09"
    store.record([Change("ann@example.org", "pending", "form")])
    assert now_status(store, "ann@example.org") == "unsubscribed"  # pending never lifts a suppression
    store.record([Change("ann@example.org", "subscribed", "form")])
    entry = store.status("ann@example.org")
    assert (entry.status, entry.name) == ("subscribed", "Ann")
    assert [(s, a) for s, _, a, _ in store.history("ann@example.org")] == [
        ("pending", 1), ("subscribed", 1), ("unsubscribed", 1), ("pending", 0), ("subscribed", 1)]


def test_a_second_unsubscribe_changes_nothing_and_the_first_source_stays(store):
    assert store.record([Change("ann@example.org", "unsubscribed", "link", issue="2020-09")]) == 1
    assert store.record([Change("ann@example.org", "unsubscribed", "one-click", issue="2020-10")]) == 0
    entry = store.status("ann@example.org")
    assert (entry.status, entry.source, entry.issue) == ("unsubscribed", "link", "2020-09")
    assert [(s, a) for s, _, a, _ in store.history("ann@example.org")] == [("unsubscribed", 1), ("unsubscribed", 0)]


@pytest.mark.parametrize("strong", ["complained", "bounced"])
def test_complained_and_bounced_stay_until_unsuppressed(store, strong):
    store.record([Change("bob@example.org", strong, "sendgrid", reason="spam report")])
    for change in (Change("bob@example.org", "subscribed", "form"), Change("bob@example.org", "pending", "form"),
                   Change("bob@example.org", "unsubscribed", "link"), Change("bob@example.org", "subscribed", "import")):
        assert store.record([change]) == 0
        assert now_status(store, "bob@example.org") == strong
    assert store.suppressed() == {"bob@example.org": strong}
    assert store.unsuppress(["BOB@example.org"]) == 1
    assert now_status(store, "bob@example.org") is None
    assert store.history("bob@example.org")[-1][:3] == ("unsuppressed", "cli", 1)
    store.record([Change("bob@example.org", "pending", "form")])
    assert now_status(store, "bob@example.org") == "pending"


def test_only_a_confirmed_sign_up_lifts_an_unsubscribe(store):
    store.record([Change("cy@example.org", "unsubscribed", "one-click")])
    store.record([Change("cy@example.org", "subscribed", "import")])
    store.record([Change("cy@example.org", "subscribed", "cli")])
    assert now_status(store, "cy@example.org") == "unsubscribed"


def test_queries(store):
    store.record([Change("a@example.org", "subscribed", "form", name="A"), Change("b@example.org", "unsubscribed", "link"),
                  Change("c@example.org", "bounced", "mailbox"), Change("d@example.org", "pending", "form"),
                  Change("e@example.org", "subscribed", "import")])
    assert store.suppressed_among(["A@example.org", "B@EXAMPLE.ORG", "c@example.org", "x@example.org"]) == {
        "b@example.org": "unsubscribed", "c@example.org": "bounced"}
    assert store.suppressed_among([]) == {}
    assert store.signups() == [("a@example.org", "A"), ("e@example.org", None)]
    assert [e.email for e in store.rows("pending")] == ["d@example.org"]
    assert len(list(store.rows())) == 5


def test_rate_buckets_are_shared_between_connections(tmp_path, database_url):
    one, two = State(tmp_path, database_url).audience(), State(tmp_path, database_url).audience()
    assert [one.hit("client:1.2.3.4", 3), two.hit("client:1.2.3.4", 3), one.hit("client:1.2.3.4", 3),
            two.hit("client:1.2.3.4", 3)] == [True, True, True, False]
    assert one.hit("client:5.6.7.8", 3)
    one.close(), two.close()


def test_private_files_and_wal(tmp_path):
    old = os.umask(0)
    try:
        store = State(tmp_path / "state").audience()
        store.record([Change("a@example.org", "unsubscribed", "link")])
    finally:
        os.umask(old)
    path = tmp_path / "state" / "audience.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    wal = path.with_name(path.name + "-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_a_link_in_place_of_the_store_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "audience.sqlite3").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NewsletterError, match="is a link"):
        State(tmp_path).audience()


def test_changes_are_committed_for_other_readers(tmp_path):
    store = State(tmp_path).audience()
    store.record([Change("a@example.org", "unsubscribed", "one-click")])
    other = sqlite3.connect(tmp_path / "audience.sqlite3")
    assert other.execute("SELECT status FROM audience").fetchall() == [("unsubscribed",)]
    other.close(), store.close()


def test_import_listmonk(tmp_path, store):
    path = tmp_path / "subscribers.csv"
    path.write_text("uuid,email,name,attributes,status,created_at,updated_at\n"
                    "1,ann@example.org,Ann,{},enabled,x,y\n"
                    "2,Bob@Example.org,Bob,{},blocklisted,x,y\n"
                    "3,cy@example.org,Cy,{},disabled,x,y\n"
                    "4,not an address,D,{},enabled,x,y\n", encoding="utf-8")
    imported = import_export(store, path)
    assert imported.counts() == {"subscribed": 1, "unsubscribed": 1}
    assert [line for line, _ in imported.skipped] == [4, 5]
    assert now_status(store, "bob@example.org") == "unsubscribed"
    assert store.status("ann@example.org").source == "import"


def test_import_listmonk_subscription_status_wins_when_stronger(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,name,status,subscription_status\nann@example.org,Ann,enabled,unsubscribed\n"
                    "bob@example.org,Bob,enabled,unconfirmed\n")
    assert [c.status for c in read_export(path).changes] == ["unsubscribed", "subscribed"]


def test_import_mailchimp_files(tmp_path, store):
    head = '"Email Address","First Name","Last Name",MEMBER_RATING,OPTIN_TIME'
    (tmp_path / "subscribed_members_export_1a2b.csv").write_text(f"\ufeff{head}\nann@example.org,Ann,Reader,2,x\n")
    (tmp_path / "unsubscribed_members_export_1a2b.csv").write_text(
        f"{head},UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_REASON\nbob@example.org,Bob,,2,x,t,c,\"No longer\nwanted\"\n")
    (tmp_path / "cleaned_members_export_1a2b.csv").write_text(f"{head},CLEAN_TIME\ncy@example.org,,,1,x,t\n")
    for name in ("subscribed", "unsubscribed", "cleaned"):
        import_export(store, tmp_path / f"{name}_members_export_1a2b.csv")
    assert {e.email: (e.status, e.name) for e in store.rows()} == {
        "ann@example.org": ("subscribed", "Ann Reader"), "bob@example.org": ("unsubscribed", "Bob"),
        "cy@example.org": ("bounced", None)}
    assert store.status("bob@example.org").reason == "No longer wanted"


def test_import_refuses_a_file_without_an_email_column(tmp_path, store):
    path = tmp_path / "x.csv"
    path.write_text("name,status\nAnn,enabled\n")
    with pytest.raises(NewsletterError, match="no email column"):
        import_export(store, path)
    path.write_bytes(b"email\n\xff\xfe\n")
    with pytest.raises(NewsletterError, match="UTF-8"):
        import_export(store, path)


def test_cost_of_the_per_batch_query(store, capsys):
    """100,000 suppressions; one query per batch of 1,000 (printed, no timing assertion)."""
    store.record(Change(f"gone{i}@example.org", "unsubscribed", "import") for i in range(100_000))
    batch = [f"gone{i}@example.org" if i % 10 == 0 else f"here{i}@example.org" for i in range(1000)]
    start = time.perf_counter()
    for _ in range(20):
        found = store.suppressed_among(batch)
    per_batch = (time.perf_counter() - start) / 20
    assert len(found) == 100
    with capsys.disabled():
        print(f"\naudience: suppressed_among, batch of 1,000 against 100,000 suppressions: "
              f"{per_batch * 1e3:.2f} ms ({per_batch * 1e6 / 1000:.2f} µs per recipient)")


def test_unknown_status_or_source_is_refused_and_nothing_is_written(store):
    with pytest.raises(ValueError):
        store.record([Change("a@example.org", "unsubscribed", "link"), Change("b@example.org", "gone", "link")])
    with pytest.raises(ValueError):
        store.record([Change("a@example.org", "unsubscribed", "carrier pigeon")])
    assert list(store.rows()) == []
