"""[tracking] counting rules on SQLite and PostgreSQL, with the clock given (audience/clicks.py),
and which links compose tracks, hostile ones among them (tracked_links.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience import clicks
from newsletter_mailer.cli import app
from newsletter_mailer.state import State

T0 = 1_800_000_000
LINKS = ["https://example.org/a", "https://example.org/b", "https://example.org/c"]


@pytest.fixture
def db(tmp_path, database_url):
    store = State(tmp_path, database_url).audience()
    clicks.store_links(store.db, "issue", LINKS)
    yield store.db
    store.close()


def table(db) -> list[tuple[int, int, int]]:
    return [(c.clicks, c.uniques, c.scanners) for c in clicks.counts(db, "issue")]


def test_totals_uniques_and_scanners_per_link_in_issue_order(db):
    assert clicks.record(db, "issue", 2, "r1", scanner=False, now=T0) == "reader"
    assert clicks.record(db, "issue", 2, "r1", scanner=False, now=T0 + 60) == "reader"
    assert clicks.record(db, "issue", 2, "r2", scanner=False, now=T0 + 61) == "reader"
    assert clicks.record(db, "issue", 1, "r3", scanner=True, now=T0 + 62) == "scanner"
    assert table(db) == [(0, 0, 1), (3, 2, 0), (0, 0, 0)]
    assert [c.url for c in clicks.counts(db, "issue")] == LINKS
    assert clicks.readers_clicking(db, "issue") == 2


def test_every_link_within_seconds_is_a_scanner_and_slower_is_a_reader(db):
    for i, link in enumerate((1, 2, 3)):  # all three within BURST_SECONDS: moved apart
        clicks.record(db, "issue", link, "scan", scanner=False, now=T0 + i)
    assert table(db) == [(0, 0, 1)] * 3 and clicks.readers_clicking(db, "issue") == 0
    step = clicks.BURST_SECONDS  # a reader who opens each link in turn, more slowly
    for i, link in enumerate((1, 2, 3)):
        assert clicks.record(db, "issue", link, "person", scanner=False, now=T0 + 100 + i * step) == "reader"
    assert table(db) == [(1, 1, 1)] * 3 and clicks.readers_clicking(db, "issue") == 1
    clicks.record(db, "issue", 1, "scan", scanner=False, now=T0 + 500)  # the scanned message's reader, later
    assert table(db)[0] == (2, 2, 1) and clicks.readers_clicking(db, "issue") == 2


def test_the_keyed_hashes_go_after_keep_days_and_the_counts_stay(db):
    clicks.record(db, "issue", 1, "r1", scanner=False, now=T0)
    clicks.record(db, "issue", 1, "r2", scanner=False, now=T0 + clicks.DAY * 29)
    assert clicks.forget_old(db, 30, T0 + clicks.DAY * 30 + 1) == 1  # r1's, 30 days and a second old
    assert [r[0] for r in db.execute("SELECT reader FROM click_seen")] == ["r2"]
    assert table(db)[0] == (2, 2, 0) and clicks.readers_clicking(db, "issue") == 2


def test_an_edited_issue_keeps_the_urls_already_sent(db):
    clicks.store_links(db, "issue", ["https://example.org/a2", *LINKS[1:]])
    clicks.store_links(db, "issue", LINKS)  # a resumed send: nothing twice
    assert sorted(clicks.urls(db, "issue", 1)) == ["https://example.org/a", "https://example.org/a2"]
    assert clicks.urls(db, "issue", 2) == [LINKS[1]] and clicks.urls(db, "other", 1) == []


HOSTILE = """\
subject: Links
preheader: A preview
date: 2020-09-01
intro: "Hi."
sections:
  - heading: One
    body: |
      [good](https://example.org/a?x=1&y=2), [personal](https://example.org/p?who={{ email }}),
      [mail](mailto:desk@example.org), [upper](HTTPS://EXAMPLE.ORG/Upper), [quote](https://example.org/q?"x"),
      [ours](https://example.org/news/u/abc), [again](https://example.org/a?x=1&y=2),
      [sign up](https://example.org/news/subscribe), [news](https://example.org/news/item)
"""


def test_compose_tracks_issue_links_and_leaves_the_rest(newsletter_dir: Path):
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    with open(newsletter_dir / "newsletter.toml", "a", encoding="utf-8") as f:
        f.write("\n[tracking]\nclicks = true\n")
    (newsletter_dir / "issues" / "links.yaml").write_text(HOSTILE, encoding="utf-8")
    settings, folder = load_settings(newsletter_dir / "newsletter.toml")
    c = compose(newsletter_dir / "issues" / "links.yaml", settings, folder)
    assert c.tracked_links[:5] == ("https://example.org/a?x=1&y=2", "HTTPS://EXAMPLE.ORG/Upper",
                                   'https://example.org/q?%22x%22', "https://example.org/news/item",
                                   "https://example.org/")
    preview = c.sample()[2]  # what previews show: the links as written
    assert 'href="https://example.org/a?x=1&amp;y=2"' in preview
    for kept in ("mailto:desk@example.org", "https://example.org/news/u/abc", "https://example.org/news/subscribe",
                 "https://example.org/newsletter/links/"):
        assert f'href="{kept}"' in preview
    assert len(c.tracked_links) == len(set(c.tracked_links)) == 6  # the two footer links too; "again" is one
    assert "who=" not in "".join(c.tracked_links)  # a link with a merge field stays personal, untracked


def test_tracking_without_a_base_url_is_one_line_exit_2(newsletter_dir: Path, monkeypatch):
    from tests.conftest import without_web

    text = without_web((newsletter_dir / "newsletter.toml").read_text(encoding="utf-8"))
    text = text.replace("unsubscribe_mailto = ", 'unsubscribe_url = "https://example.org/u?e={{ email }}"\n'
                        "unsubscribe_mailto = ", 1)
    (newsletter_dir / "newsletter.toml").write_text(text + "\n[tracking]\nclicks = true\n", encoding="utf-8")
    monkeypatch.chdir(newsletter_dir)
    r = CliRunner().invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "tracking" in r.output and "[web] base_url" in r.output and "Traceback" not in r.output
