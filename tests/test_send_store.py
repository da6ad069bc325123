"""Every send obeys the audience store, and the links it writes are the app's (issue 11).

The web app runs as a real uvicorn server (tests/helpers/webserver.py) over the same state
folder as the sends; messages go to the outbox and are read back as a mail client would.
"""

from __future__ import annotations

import email
import email.policy
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience.store import Change
from newsletter_mailer.cli import app
from tests.conftest import MINI_ISSUE, without_web
from tests.helpers.webserver import ROOT, SECRET, start, stop
from tests.test_web import BODIES

runner = CliRunner()
VARIANTS = ["urlencoded", "multipart", "empty", "text/plain"]
READERS = [f"reader{i}@example.org" for i in range(6)]


@pytest.fixture
def site(tmp_path):
    """The server, plus a sender config over the same folder and state whose links are the app's."""
    server = start(tmp_path)
    text = (tmp_path / "newsletter.toml").read_text(encoding="utf-8")
    kept = [ln for ln in text.splitlines() if not ln.startswith(("unsubscribe_url", "unsubscribe_one_click"))]
    (tmp_path / "sender.toml").write_text("\n".join(kept) + "\n", encoding="utf-8")
    (tmp_path / "issues").mkdir()
    for slug in ("first", "second"):
        (tmp_path / "issues" / f"{slug}.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text(
        "email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate(READERS)), encoding="utf-8")
    yield server
    stop(server)


def send(server, slug: str, *extra: str):
    f = server.folder
    args = ["send", str(f / "issues" / f"{slug}.yaml"), "--config", str(f / "sender.toml"), "--state",
            str(server.state), "--outbox", str(f / "outbox"), "--yes", *extra]
    return runner.invoke(app, args, env={"NEWSLETTER_SECRET": SECRET})


def messages(folder: Path, slug: str) -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in sorted((folder / "outbox" / slug).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out[msg["To"].addresses[0].addr_spec.lower()] = msg
    return out


def link_of(msg) -> str:
    return msg["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]


def ledger(state: Path, slug: str) -> dict[str, str]:
    db = sqlite3.connect(state / "ledger.sqlite3")
    try:
        return dict(db.execute("SELECT email, status FROM deliveries WHERE issue=?", (slug,)))
    finally:
        db.close()


def test_each_links_one_click_variant_unsubscribes_and_the_next_send_skips_exactly_those(site):
    csv = site.folder / "subscribers.csv"
    r = send(site, "first", "--list", str(csv))
    assert r.exit_code == 0, r.output
    first = messages(site.folder, "first")
    assert sorted(first) == READERS
    for address, msg in first.items():
        link = link_of(msg)
        assert link.startswith(site.url + "/u/"), link
        assert address not in link and address.split("@")[0] not in link
        assert "List-Unsubscribe-Post" not in msg  # http: one-click is advertised only for https
    for address, variant in zip(READERS, VARIANTS):
        answer = httpx.post(link_of(first[address]), timeout=30, **BODIES[variant])
        assert answer.status_code == 200 and "You are unsubscribed" in answer.text, variant
    r = send(site, "second", "--list", str(csv))
    assert r.exit_code == 0, r.output
    assert "unsubscribed (audience store): 4 (lines 2, 3, 4, 5)" in r.output
    assert sorted(messages(site.folder, "second")) == READERS[4:]
    assert ledger(site.state, "second") == {a: "sent" for a in READERS[4:]}
    store = site.audience()
    try:
        assert [store.status(a).issue for a in READERS[:4]] == ["first"] * 4  # the slug sealed in the link
    finally:
        store.close()


def test_confirmed_signups_are_sent_once_with_csv_values_winning(site):
    store = site.audience()
    try:
        store.record([Change("New.Reader@example.org", "subscribed", "form", name="New Reader"),
                      Change("READER1@example.org", "subscribed", "form", name="Store Name"),
                      Change("pending@example.org", "pending", "form"),
                      Change("reader2@example.org", "bounced", "sendgrid")])
    finally:
        store.close()
    r = send(site, "first", "--list", str(site.folder / "subscribers.csv"))
    assert r.exit_code == 0, r.output
    got = messages(site.folder, "first")
    assert sorted(got) == sorted(set(READERS) - {"reader2@example.org"} | {"new.reader@example.org"})
    assert "bounced (audience store): 1 (line 4)" in r.output
    assert "to send (1 of these is a confirmed sign-up from the audience store)" in r.output
    assert got["reader1@example.org"]["To"].addresses[0].display_name == "Reader 1"  # the CSV wins
    assert got["new.reader@example.org"]["Subject"] == "Hello New Reader"
    assert len(list((site.folder / "outbox" / "first").glob("*.eml"))) == 6  # reader1 once


def test_list_may_be_left_out_with_signups_and_a_dry_run_creates_no_store(site, tmp_path_factory):
    empty = tmp_path_factory.mktemp("nostate")
    f = site.folder
    dry = runner.invoke(app, ["send", str(f / "issues/first.yaml"), "--config", str(f / "sender.toml"),
                              "--state", str(empty), "--list", str(f / "subscribers.csv"), "--dry-run"],
                        env={"NEWSLETTER_SECRET": SECRET})
    assert dry.exit_code == 0, dry.output
    assert not (empty / "audience.sqlite3").exists()
    none = send(site, "first")
    assert none.exit_code == 2 and "no subscriber list" in none.output and "sign-ups" in none.output
    store = site.audience()
    try:
        store.record([Change("solo@example.org", "subscribed", "form")])
    finally:
        store.close()
    r = send(site, "first")
    assert r.exit_code == 0, r.output
    assert sorted(messages(site.folder, "first")) == ["solo@example.org"]
    assert messages(site.folder, "first")["solo@example.org"]["Subject"] == "Hello friend"  # the default


@pytest.mark.parametrize("settings, post", [
    ('[web]\nbase_url = "https://news.example.org"\n', True),
    ('[web]\nbase_url = "http://news.example.org"\n', False),
    ('unsubscribe_url = "https://example.org/u?t={{ token }}"\n', False),
    ('unsubscribe_url = "https://example.org/u?t={{ token }}"\nunsubscribe_one_click = true\n', True),
    ('unsubscribe_url = "https://example.org/u?t={{ token }}"\n[web]\nbase_url = "https://news.example.org"\n',
     False),
])
def test_list_unsubscribe_post_only_where_a_post_is_honoured(newsletter_dir, settings, post):
    text = without_web((newsletter_dir / "newsletter.toml").read_text(encoding="utf-8"))
    head, _, tail = text.partition("[brand]")
    head = "\n".join(ln for ln in head.splitlines() if not ln.startswith(("unsubscribe_url", "unsubscribe_one")))
    top, _, web = settings.partition("[web]")
    (newsletter_dir / "newsletter.toml").write_text(
        head + "\n" + top + "[brand]" + tail + ("\n[web]" + web if web else ""), encoding="utf-8")
    (newsletter_dir / "subscribers.csv").write_text("email\nann@example.org\n", encoding="utf-8")
    r = runner.invoke(app, ["send", str(newsletter_dir / "issues/mini.yaml"), "--config",
                            str(newsletter_dir / "newsletter.toml"), "--list", str(newsletter_dir / "subscribers.csv"),
                            "--outbox", str(newsletter_dir / "outbox"), "--yes"], env={"NEWSLETTER_SECRET": "Hk3Pz8QwLr5Tn2Vb7Xc4Md9Fs6Jg1Ya0Ue"})
    assert r.exit_code == 0, r.output
    msg = messages(newsletter_dir, "mini")["ann@example.org"]
    assert ("List-Unsubscribe-Post" in msg) is post
    assert "ann" not in link_of(msg)


@pytest.mark.slow
def test_an_unsubscribe_during_a_5000_recipient_send_is_honoured_for_every_later_batch(site):
    """The send (rate-limited outbox: 10 batches of 500) and the server are separate processes over
    one state folder; once the first batch is out, the last readers unsubscribe through the app."""
    f = site.folder
    readers = [f"r{i:04d}@example.org" for i in range(5000)]
    (f / "big.csv").write_text("email\n" + "\n".join(readers) + "\n", encoding="utf-8")
    text = (f / "sender.toml").read_text(encoding="utf-8").replace(
        'provider = "outbox"', 'provider = "outbox"\nrate = 500')
    (f / "sender.toml").write_text(text, encoding="utf-8")
    env = dict(os.environ, NEWSLETTER_SECRET=SECRET,
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "send", str(f / "issues/first.yaml"),
                             "--config", str(f / "sender.toml"), "--state", str(site.state), "--outbox",
                             str(f / "outbox"), "--list", str(f / "big.csv"), "--yes"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=f)
    outbox = f / "outbox" / "first"
    while proc.poll() is None and not (outbox.is_dir() and any(outbox.glob("*.eml"))):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0].decode()
    from newsletter_mailer import tokens

    leaving = readers[-10:]
    for address in leaving:
        link = f"{site.url}/u/{tokens.make_unsubscribe(site.secret, site.list_id, address, 'first')}"
        assert httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=30).status_code == 200
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    assert "unsubscribed during the send: 10" in out and "sent: 4990" in out
    mailed = set(messages(f, "first"))
    rows = ledger(site.state, "first")
    assert mailed == set(readers) - set(leaving)
    assert rows == {a: "sent" for a in mailed}  # the ledger and the outbox agree; the leavers have no row
