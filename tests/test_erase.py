"""`newsletter audience erase` (issue 24): a reader's data gone from every table, clicks included, and a
tombstone that keeps an old list from mailing them until they sign up and confirm again.

One story per backend (SQLite and PostgreSQL): an issue sent with [tracking] per_reader through the
outbox, a click and a one-click unsubscribe through the real server, then the erasure and what follows.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer import tokens
from newsletter_mailer.cli import app
from newsletter_mailer.state import State, migrations
from tests.helpers.webserver import SECRET, start, stop
from tests.conftest import use_database
from tests.test_clicks import ISSUE, _tracking, tracked

runner = CliRunner()
ANN, BOB = "ann@example.org", "bob@example.org"  # ann clicks, bob unsubscribes; both are erased
KEPT = ("cat@example.org", "dan@example.org")
ODD = "=1+2'or'1@example.org"  # valid, and a formula / SQL quote: printed and stored as data only
HOSTILE = "eve\x1b[31m@example.org"  # a terminal escape: not an address, the whole command refused
NOBODY = "nobody@example.org"


@pytest.fixture
def story(tmp_path, database_url, monkeypatch):
    use_database(monkeypatch, database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    folder = tmp_path / "nl"
    server = start(folder, edit=_tracking(True))
    try:
        (folder / "issues").mkdir()
        for slug in ("clicks", "next", "third"):
            (folder / "issues" / f"{slug}.yaml").write_text(
                ISSUE.format(server=server.url).replace("subject: Clicks", f"subject: Issue {slug}"), encoding="utf-8")
        # the list as an editor keeps it: ann in other case, every reader once
        (folder / "list.csv").write_text("email,name\nAnn@Example.org,\n" + "".join(
            f"{r},\n" for r in (BOB, *KEPT)), encoding="utf-8")
        yield server, folder, database_url
    finally:
        stop(server)


def cli(folder: Path, *args: str, ok: bool = True):
    r = runner.invoke(app, [*args, "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")])
    if ok:
        assert r.exit_code == 0, r.output
    return r


def send(folder: Path, slug: str):
    r = cli(folder, "send", str(folder / "issues" / f"{slug}.yaml"), "--list", str(folder / "list.csv"),
            "--outbox", str(folder / "outbox"), "--provider", "outbox", "--yes")
    mails = {}
    for path in sorted((folder / "outbox" / slug).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        mails.setdefault(msg["To"].addresses[0].addr_spec.lower(), []).append(msg)
    return r.output, mails


def tables(folder: Path, url: str | None) -> dict[str, list[tuple]]:
    """Every row of every table of both databases, sorted: a snapshot to compare and to scan."""
    out = {}
    for component, names in migrations.TABLES.items():
        db = getattr(State(folder / "state", url), component)()
        try:
            for table in names:
                out[table] = sorted((tuple(map(str, r)) for r in db.db.execute(f"SELECT * FROM {table}")))
        finally:
            db.close()
    return out


def holding(snapshot: dict[str, list[tuple]], addresses) -> dict[str, list[tuple]]:
    """The rows of the snapshot whose text, in any column, holds one of the addresses."""
    return {t: hit for t, rows in snapshot.items()
            if (hit := [r for r in rows if any(a.lower() in " ".join(r).lower() for a in addresses)])}


def declined_at_the_prompt(folder: Path) -> subprocess.CompletedProcess:
    primary, secondary = os.openpty()  # a real terminal, so erase asks
    try:
        os.write(primary, b"n\n")
        return subprocess.run([sys.executable, "-m", "newsletter_mailer", "audience", "erase", ANN, BOB,
                               "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")],
                              stdin=secondary, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    finally:
        os.close(primary)
        os.close(secondary)


def test_erase_removes_every_trace_and_a_tombstone_keeps_old_lists_from_mailing(story, monkeypatch):
    import secrets

    server, folder, url = story
    _, first = send(folder, "clicks")
    assert set(first) == {ANN, BOB, *KEPT}
    with httpx.Client(timeout=30) as c:
        for link in tracked(server, first[ANN][0])[:2]:  # ann's clicks: kept per reader
            assert c.get(link).status_code == 302
        token = tokens.make_unsubscribe(server.secret, server.list_id, BOB, "clicks")
        assert c.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    before = tables(folder, url)
    assert {"reader_clicks", "deliveries"} <= set(holding(before, [ANN]))
    assert {"audience", "history", "deliveries"} <= set(holding(before, [BOB]))
    status_before = cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output
    report_before = cli(folder, "report", str(folder / "issues" / "clicks.yaml")).output

    # refused, declined and dry runs change nothing
    bad = cli(folder, "audience", "erase", ANN, HOSTILE, BOB, "--yes", ok=False)
    assert bad.exit_code == 2 and "not a valid email address" in bad.output and "\x1b" not in bad.output
    (folder / "erase.txt").write_text(f"{ANN}\n# a comment\n\n{BOB}\nnot an address\n", encoding="utf-8")
    bad = cli(folder, "audience", "erase", "--file", str(folder / "erase.txt"), "--yes", ok=False)
    assert bad.exit_code == 2 and "erase.txt:5: not a valid email address" in bad.output
    bad = cli(folder, "audience", "erase", "--file", str(folder / "missing.txt"), "--yes", ok=False)
    assert bad.exit_code == 2 and "missing.txt" in bad.output and "Traceback" not in bad.output
    dry = cli(folder, "audience", "erase", ANN, BOB, NOBODY, "--dry-run")
    assert f"would erase {ANN}: status" not in dry.output  # ann never had a status, only a delivery and clicks
    assert re.search(rf"would erase {ANN}: .*clicks 2.*deliveries 1", dry.output), dry.output
    assert f"{NOBODY}: not found; a tombstone would be kept" in dry.output and "nothing erased (--dry-run)" in dry.output
    p = declined_at_the_prompt(folder)
    assert p.returncode == 0 and "This cannot be undone" in p.stdout and p.stdout.rstrip().endswith("nothing erased")
    assert tables(folder, url) == before

    # the erasure: two readers among several, an odd valid address and an unknown one mixed in
    done = cli(folder, "audience", "erase", ANN, ODD, BOB.upper(), NOBODY, "--yes").output
    assert re.search(rf"^erased {ANN}: .*clicks 2.*deliveries 1", done, re.M), done
    assert re.search(rf"^erased {BOB}: status 1, history 1.*deliveries 1", done, re.M), done
    assert f"{ODD}: not found; a tombstone is kept" in done and f"{NOBODY}: not found" in done
    assert "erased 2 address(es), 2 not found" in done
    after = tables(folder, url)
    assert holding(after, [ANN, BOB]) == {}, holding(after, [ANN, BOB])
    assert len(after["erased"]) == 4 and len(after["deliveries"]) == len(before["deliveries"])
    assert holding(after, KEPT) == holding(before, KEPT)  # the others' rows untouched
    listed = cli(folder, "audience", "list", "--format", "csv").output
    assert ANN not in listed and BOB not in listed
    assert cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output == status_before
    assert cli(folder, "report", str(folder / "issues" / "clicks.yaml")).output == report_before
    again = cli(folder, "audience", "erase", ANN, "--yes").output
    assert f"{ANN}: not found (erased before)" in again and tables(folder, url) == after

    # the same CSV, next issue, under a rotated newsletter secret (the tombstones' key is the store's
    # own): both skipped and said so, the rest mailed once
    monkeypatch.setenv("NEWSLETTER_SECRET", secrets.token_urlsafe(32))
    out, second = send(folder, "next")
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    assert set(second) == set(KEPT) and all(len(m) == 1 for m in second.values())
    assert "erased on request: 2 (lines 2, 3)" in out, out
    imported = cli(folder, "audience", "import", str(folder / "list.csv"), "--status", "subscribed").output
    assert imported.count("erased on request") == 2 and ANN not in cli(folder, "audience", "list").output

    # ann signs up again and confirms: her tombstone goes; the first issue still never reaches her twice
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/subscribe", data={"email": ANN, "consent": "yes"}).status_code == 200
        [mail] = server.mails_to(ANN)
        body = mail.get_payload()[0].get_payload(decode=True).decode()
        link = re.search(r"/confirm/[A-Za-z0-9_-]+", body).group()
        assert tables(folder, url)["erased"] == after["erased"]  # pending is not consent
        assert c.post(link, data={"confirm": "yes"}).status_code == 200
    assert len(tables(folder, url)["erased"]) == 3
    for path in (folder / "outbox" / "clicks").glob("*.eml"):
        path.unlink()
    out, resent = send(folder, "clicks")
    assert resent == {} and cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output == status_before
    out, third = send(folder, "third")
    assert set(third) == {ANN, *KEPT} and all(len(m) == 1 for m in third.values())
    assert "erased on request" in out  # bob's tombstone stands


def test_what_arrives_later_for_an_erased_reader_is_counted_without_the_address(story):
    """An unsubscribe or a click from an old message, a bounce, a block or a soft bounce about an erased
    reader: counted (under the tombstone key), and no table holds the address again; an export of the
    old list leaves them out. Good events for the other readers, mixed in, are kept as ever."""
    from newsletter_mailer.audience import sendgrid_store
    from newsletter_mailer.audience.store import Change

    server, folder, url = story
    _, first = send(folder, "clicks")
    old_links = tracked(server, first[ANN][0])
    cli(folder, "audience", "erase", ANN, BOB, "--yes")
    unsubscribes = cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output
    with httpx.Client(timeout=30) as c:
        for who in (BOB, KEPT[0]):  # one-click from an old message: the erased reader's and another's
            token = tokens.make_unsubscribe(server.secret, server.list_id, who, "clicks")
            assert c.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert c.get(old_links[0]).status_code == 302  # ann's per-reader link, from before the erasure
    store = State(folder / "state", url).audience()
    try:
        with store.transaction():
            store.apply(Change(ANN, "bounced", "sendgrid", "clicks", f"550 {ANN} unknown"))
            store.apply(Change(KEPT[1], "bounced", "sendgrid", "clicks", "550 unknown"))
            sendgrid_store.block(store, BOB.upper(), 1_800_000_000, "sendgrid", "4.7.1", f"blocked {BOB}", "clicks")
        store.soft_bounces([(ANN, "clicks", f"452 {ANN} full"), (KEPT[0], "clicks", "452 full")], limit=3)
    finally:
        store.close()
    after = tables(folder, url)
    assert holding(after, [ANN, BOB]) == {}, holding(after, [ANN, BOB])
    assert holding(after, [KEPT[1]])["audience"] and holding(after, [KEPT[0]])["soft_bounces"]
    assert any(r[0].startswith("erased:") for r in after["blocks"])
    assert any(r[1].startswith("erased:") and r[2] == "bounced" for r in after["history"])  # (id, email, status, …)
    status = cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output
    assert status != unsubscribes  # the later events were counted for the issue
    assert ANN not in cli(folder, "audience", "list", "--format", "csv").output
    exported = cli(folder, "audience", "export", str(folder / "out.csv"), "--list", str(folder / "list.csv")).output
    assert "left out 2 erased on request" in exported, exported
    text = (folder / "out.csv").read_text(encoding="utf-8").lower()
    assert ANN not in text and BOB not in text and all(k in text for k in KEPT)


def test_a_reader_erased_while_a_send_runs_gets_none_of_its_later_batches(tmp_path, database_url, monkeypatch):
    """The send reads the tombstones for its plan; an erasure after that (the erase deletes and rewrites
    rows, so the store's change mark did not move) let every later batch mail the reader and write
    their address into the ledger again. Each batch now leaves out who was erased since, any case."""
    from newsletter_mailer.audience import erasure
    from newsletter_mailer.audience.in_send import SendAudience
    from newsletter_mailer.providers.base import Recipient

    use_database(monkeypatch, database_url)
    state = State(tmp_path / "state", database_url)
    store, ledger = state.audience(), state.ledger()
    running = SendAudience(state, dry_run=False)  # the plan: nobody erased yet
    try:
        batch = [Recipient(a, "", []) for a in ("Ann@Example.org", BOB, *KEPT)]
        assert running.still_wanted(batch) == (batch, 0)
        erasure.erase(store, ledger, ANN.upper())
        erasure.erase(store, ledger, NOBODY)
        kept, left = running.still_wanted(batch + [Recipient(NOBODY, "", [])])
        assert [r.email for r in kept] == [BOB, *KEPT] and left == 2
        assert running.still_wanted(batch[1:]) == (batch[1:], 0)  # the others as ever
    finally:
        running.close()
        store.close()
        ledger.close()


def test_an_address_file_saved_with_a_byte_order_mark_and_crlf_is_read(tmp_path, database_url, monkeypatch):
    """Notepad's UTF-8 starts with a BOM: the first address was refused as "not a valid email address"
    (every other file the project reads takes it). A NUL or an undecodable byte is still one line."""
    use_database(monkeypatch, database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (tmp_path / "bom.txt").write_bytes(f"\ufeff{ANN}\r\n{BOB}\r\n".encode("utf-8"))
    r = runner.invoke(app, ["audience", "erase", "--file", str(tmp_path / "bom.txt"), "--yes",
                            "--state", str(tmp_path / "state")])
    assert r.exit_code == 0, r.output
    assert f"{ANN}: not found" in r.output and "erased 0 address(es), 2 not found" in r.output
    for name, raw in (("nul.txt", f"{ANN}\0\n".encode()),
                      ("latin.txt", f"{BOB}\n\xe9ve@example.org\n".encode("latin-1"))):
        (tmp_path / name).write_bytes(raw)
        r = runner.invoke(app, ["audience", "erase", "--file", str(tmp_path / name), "--yes",
                                "--state", str(tmp_path / "state")])
        assert r.exit_code == 2 and name in r.output and "Traceback" not in r.output, r.output


def test_a_bounce_tied_to_an_erased_readers_old_message_makes_no_reader_of_the_tombstone(story):
    """A late bounce report returns an erased reader's message: its Message-ID finds the ledger row, now
    under the tombstone key, and that key was recorded as a reader of its own ("erased:…" bounced in
    `audience list`). It is counted for the issue under the tombstone, like any later event, and no
    status row holds it; another reader's bounce in the same mbox is recorded as ever."""
    import mailbox

    from tests.test_inbox import _dsn

    server, folder, url = story
    _, first = send(folder, "clicks")
    cli(folder, "audience", "erase", ANN, "--yes")
    box = mailbox.mbox(folder / "bounces.mbox")
    for who in (ANN, KEPT[0]):
        box.add(_dsn(who, "5.1.1", first[who][0]["Message-ID"], "clicks"))
    box.flush()
    box.close()
    status_before = cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output
    r = cli(folder, "inbox", "--mbox", str(folder / "bounces.mbox"))
    after = tables(folder, url)
    assert holding(after, [ANN]) == {}
    assert [row[0] for row in after["audience"]] == [KEPT[0]], after["audience"]
    assert any(row[1].startswith("erased:") and row[2] == "bounced" for row in after["history"])
    listed = cli(folder, "audience", "list").output
    assert "erased:" not in listed and KEPT[0] in listed, listed
    assert cli(folder, "status", str(folder / "issues" / "clicks.yaml")).output != status_before, r.output


def test_erase_while_a_send_holds_its_lock_erases_the_store_and_asks_to_finish_the_ledger_later(story):
    """A batch in flight records its outcome by address: the ledger's rows are rewritten only while no
    send runs. With a send live, the store's rows go at once (no later batch mails the reader), the
    command says which send and exits 1, and the same command afterwards finishes the ledger."""
    server, folder, url = story
    send(folder, "clicks")
    live = State(folder / "state", url).send_lock("next")  # another issue's send, running now
    try:
        r = cli(folder, "audience", "erase", ANN, BOB, "--yes", ok=False)
        assert r.exit_code == 1 and "next is being sent from" in r.output, r.output
        assert "the audience store's rows are erased, not yet the send ledger's" in r.output
        assert "Traceback" not in r.output
        left = holding(tables(folder, url), [ANN, BOB])
        assert set(left) == {"deliveries"}, left  # only the ledger still names them
        out, mails = send(folder, "third")  # a send that plans now: the tombstones already hold
        assert "erased on request: 2" in out and set(mails) == set(KEPT)
    finally:
        live.release()
    again = cli(folder, "audience", "erase", ANN, BOB, "--yes")
    assert "erased 2 address(es)" in again.output, again.output
    assert holding(tables(folder, url), [ANN, BOB]) == {}
