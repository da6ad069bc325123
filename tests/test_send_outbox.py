"""send and test-send end to end through the CLI, delivered to the outbox, with the real ledger."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_LIST, EXAMPLE_SETTINGS
from newsletter_mailer.state import State

runner = CliRunner()

LIST = """\
Email,Name,Status,Tags,School Year
ann@example.org,Ann Able,,parents,Year 7
bob@example.org,"Smith, Bob",subscribed,staff,
chloe@example.org,Chloé {{ 7*7 }} <b>,,parents,Year 9
ANN@example.org,Ann Again,,parents,
gone@example.org,Gone,unsubscribed,,
broken,No Address,,,
"""


@pytest.fixture
def folder(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    (newsletter_dir / "subscribers.csv").write_text(LIST, encoding="utf-8")
    return newsletter_dir


def send(*args: str):
    return runner.invoke(app, ["send", "issues/mini.yaml", "--list", "subscribers.csv", *args])


def messages(folder: Path, slug: str = "mini") -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in sorted((folder / "outbox" / slug).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out[msg["To"].addresses[0].addr_spec] = msg
    return out


def ledger_rows(folder: Path) -> dict[str, str]:
    db = sqlite3.connect(folder / ".newsletter" / "ledger.sqlite3")
    return dict(db.execute("SELECT email, status FROM deliveries WHERE issue='mini'"))


def test_send_mails_each_valid_unique_subscribed_row_once(folder: Path):
    r = send("--yes")
    assert r.exit_code == 0, r.output
    msgs = messages(folder)
    assert sorted(msgs) == ["ann@example.org", "bob@example.org", "chloe@example.org"]
    assert "sent: 3, failed: 0" in r.output
    # skipped rows are counted by reason with their CSV line numbers
    assert "duplicate: 1 (line 5)" in r.output
    assert "unsubscribed: 1 (line 6)" in r.output
    assert "invalid: 1 (line 7" in r.output
    assert ledger_rows(folder) == {e: "sent" for e in msgs}


def test_second_run_mails_nobody_and_new_subscribers_are_mailed(folder: Path):
    assert send("--yes").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "outbox" / "mini").iterdir()}
    r = send("--yes")
    assert r.exit_code == 0
    assert "nothing to send" in r.output and "3 already sent" in r.output
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "outbox" / "mini").iterdir()}
    assert before == after
    with open(folder / "subscribers.csv", "a", encoding="utf-8") as f:
        f.write("dan@example.org,Dan,,,\n")
    r = send("--yes")
    assert r.exit_code == 0 and "1 to send, 3 already sent" in r.output
    assert sorted(messages(folder)) == ["ann@example.org", "bob@example.org", "chloe@example.org", "dan@example.org"]


def test_personalised_and_escaped_never_evaluated(folder: Path):
    assert send("--yes").exit_code == 0
    msg = messages(folder)["chloe@example.org"]
    assert msg["Subject"] == "Hello Chloé {{ 7*7 }} <b>"
    assert msg["To"].addresses[0].display_name == "Chloé {{ 7*7 }} <b>"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Dear Chloé {{ 7*7 }} <b>, welcome." in text
    assert "Dear Chloé {{ 7*7 }} &lt;b&gt;, welcome." in html
    assert "49" not in text.split("welcome")[0]
    assert "For Year 9." in text
    bob = messages(folder)["bob@example.org"]
    assert "For all years." in bob.get_body(("plain",)).get_content()  # empty column: the default


def test_message_headers_and_unsubscribe(folder: Path):
    assert send("--yes").exit_code == 0
    msg = messages(folder)["ann@example.org"]
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    assert msg["From"].addresses[0].addr_spec == "newsletter@example.org"
    assert msg["Reply-To"] == "cscp@example.org"
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@example.org>")
    assert msg["Date"]
    assert msg["List-Id"]
    lu = msg["List-Unsubscribe"]
    # the example's token links ([web] base_url): the reader's address is in no URL, the token opens to it
    link = re.search(r"<(https://example\.org/news/u/([^>]+))>", lu)
    assert link and "ann@example.org" not in lu, lu
    assert "<mailto:unsubscribe@example.org" in lu
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    from newsletter_mailer.listid import stable_id
    from newsletter_mailer.tokens import read_unsubscribe

    assert read_unsubscribe(b"r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA", stable_id(msg["List-Id"]), link.group(2))[0] == "ann@example.org"
    html = msg.get_body(("html",)).get_content()
    assert f'href="{link.group(1)}"' in html
    ids = {m["Message-ID"] for m in messages(folder).values()}
    assert len(ids) == 3
    raw = next((folder / "outbox" / "mini").glob("ann*.eml")).read_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_test_send_writes_exactly_one_test_message_not_in_ledger(folder: Path):
    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--to", "me@example.org", "--list", "subscribers.csv"])
    assert r.exit_code == 0, r.output
    assert not list((folder / "outbox" / "mini").glob("*.eml"))  # beside, never among, the real ones
    files = list((folder / "outbox" / "mini" / "test").glob("*.eml"))
    assert len(files) == 1
    assert f"written to {Path('outbox', 'mini', 'test', files[0].name)}" in r.output
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "[TEST] Hello Ann Able"
    assert msg["To"] == "me@example.org"
    assert not (folder / ".newsletter" / "ledger.sqlite3").exists()


def test_test_send_as_subscriber_and_default_recipient(folder: Path):
    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--list", "subscribers.csv", "--as", "bob@example.org"])
    assert r.exit_code == 0, r.output
    msg = messages(folder, "mini/test")["editor@example.org"]  # test_recipient from the settings
    assert msg["Subject"] == "[TEST] Hello Smith, Bob"
    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--list", "subscribers.csv", "--as", "nobody@example.org"])
    assert r.exit_code == 2 and "nobody@example.org is not a subscriber" in r.output


def test_test_send_unsubscribe_link_is_the_testers_not_the_subscribers(folder: Path):
    """Pressing unsubscribe in a test mail must never unsubscribe the subscriber it is personalised as."""
    from newsletter_mailer.unsubscribe import token

    r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--to", "me@example.net", "--list", "subscribers.csv"])
    assert r.exit_code == 0, r.output
    msg = messages(folder, "mini/test")["me@example.net"]
    assert msg["Subject"] == "[TEST] Hello Ann Able"  # still personalised as the first subscriber
    from newsletter_mailer.listid import stable_id
    from newsletter_mailer.tokens import read_unsubscribe

    lu = msg["List-Unsubscribe"]
    link = re.search(r"<(https://example\.org/news/u/([^>]+))>", lu)
    assert link and read_unsubscribe(b"r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA", stable_id(msg["List-Id"]), link.group(2))[0] == "me@example.net"
    assert "ann@example.org" not in lu
    html = msg.get_body(("html",)).get_content()
    assert f'href="{link.group(1)}"' in html


def test_test_sends_never_overwrite_each_other_or_real_messages(folder: Path):
    assert send("--yes").exit_code == 0
    real = {p.name: p.read_bytes() for p in (folder / "outbox" / "mini").glob("*.eml")}
    for _ in range(2):
        r = runner.invoke(app, ["test-send", "issues/mini.yaml", "--to", "ann@example.org", "--list", "subscribers.csv"])
        assert r.exit_code == 0, r.output
    assert {p.name: p.read_bytes() for p in (folder / "outbox" / "mini").glob("*.eml")} == real
    tests = list((folder / "outbox" / "mini" / "test").glob("*.eml"))
    assert len(tests) == 2 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tests)


def test_outbox_is_next_to_the_settings_not_the_current_folder(folder: Path, tmp_path: Path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = runner.invoke(app, ["test-send", str(folder / "issues/mini.yaml"), "--to", "me@example.org",
                            "--config", str(folder / "newsletter.toml")])
    assert r.exit_code == 0, r.output
    assert not (elsewhere / "outbox").exists()
    assert len(list((folder / "outbox" / "mini" / "test").glob("*.eml"))) == 1
    r = runner.invoke(app, ["test-send", str(folder / "issues/mini.yaml"), "--to", "me@example.org",
                            "--config", str(folder / "newsletter.toml"), "--outbox", "here"])
    assert r.exit_code == 0, r.output
    assert len(list((elsewhere / "here" / "mini" / "test").glob("*.eml"))) == 1


def test_dry_run_sends_nothing_and_writes_no_ledger(folder: Path):
    r = send("--dry-run")
    assert r.exit_code == 0, r.output
    assert "would send 3" in r.output
    assert not (folder / "outbox").exists()
    assert not (folder / ".newsletter" / "ledger.sqlite3").exists()


def test_refuses_without_terminal_or_yes(folder: Path):
    r = send()
    assert r.exit_code == 2
    assert "pass --yes" in r.output
    assert not (folder / "outbox").exists()


def test_tag_and_suppress(folder: Path):
    (folder / "suppress.txt").write_text("ANN@example.org\nnot an address\n", encoding="utf-8")
    r = send("--yes", "--tag", "parents", "--suppress", "suppress.txt")
    assert r.exit_code == 0, r.output
    assert "1 line(s) of the suppression file(s) are not addresses" in r.output
    assert sorted(messages(folder)) == ["chloe@example.org"]


def test_missing_merge_column_is_an_error_before_sending(folder: Path):
    issue = folder / "issues" / "mini.yaml"
    issue.write_text(issue.read_text().replace("For {{ school_year", "For {{ house }} {{ school_year"))
    r = send("--yes")
    assert r.exit_code == 2
    assert "house" in r.output and "no default" in r.output
    assert not (folder / "outbox").exists()


@pytest.mark.parametrize("content, expect", [
    ("", "empty"),
    ("name,status\nAnn,\n", "email"),
])
def test_broken_list_is_an_error_before_sending(folder: Path, content: str, expect: str):
    (folder / "subscribers.csv").write_text(content, encoding="utf-8")
    r = send("--yes")
    assert r.exit_code == 2
    assert "subscribers.csv" in r.output and expect in r.output.lower()
    assert not (folder / "outbox").exists()


def test_interrupted_attempt_is_held_back_until_resend_uncertain(folder: Path):

    ledger = State(folder / ".newsletter").ledger()
    ledger.begin("mini", ["bob@example.org"], "outbox")  # as if killed mid-attempt
    ledger.close()
    r = send("--yes")
    assert r.exit_code == 0, r.output
    assert "bob@example.org" in r.output and "held back: 1" in r.output
    assert sorted(messages(folder)) == ["ann@example.org", "chloe@example.org"]
    st = runner.invoke(app, ["status", "issues/mini.yaml", "--list-uncertain"])
    assert "uncertain 1" in st.output and "bob@example.org" in st.output
    r = send("--yes", "--resend-uncertain")
    assert r.exit_code == 0
    assert sorted(messages(folder)) == ["ann@example.org", "bob@example.org", "chloe@example.org"]
    assert ledger_rows(folder)["bob@example.org"] == "sent"


def test_state_files_are_private_and_secret_generated_once(folder: Path, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    r = send("--yes")
    assert r.exit_code == 0, r.output
    assert "generated an unsubscribe secret" in r.output
    secret = folder / ".newsletter" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / ".newsletter" / "ledger.sqlite3").stat().st_mode) == 0o600
    first = secret.read_text()
    (folder / "subscribers.csv").write_text("email\nzed@example.org\n", encoding="utf-8")
    r = send("--yes")
    assert "generated" not in r.output and secret.read_text() == first


def test_readme_first_command_on_the_example(tmp_path: Path, monkeypatch):
    """The README's main job: the example issue and list, delivered to the outbox."""
    for p in (EXAMPLE_SETTINGS, EXAMPLE_LIST):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "issues").mkdir()
    shutil.copy(EXAMPLE_ISSUE, tmp_path / "issues" / EXAMPLE_ISSUE.name)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["send", "issues/2020-09-cscp.yaml", "--list", "subscribers.csv.example", "--yes"])
    assert r.exit_code == 0, r.output
    files = list((tmp_path / "outbox" / "2020-09-cscp").glob("*.eml"))
    assert len(files) == 7
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        assert msg["Subject"] == "CSCP Newsletter - September 2020"
        assert "It's Not OK" in msg.get_body(("plain",)).get_content()
    r = runner.invoke(app, ["send", "issues/2020-09-cscp.yaml", "--list", "subscribers.csv.example", "--yes"])
    assert r.exit_code == 0 and "nothing to send" in r.output


def test_rate_limit_paces_batches(folder: Path, monkeypatch):
    """delivery.rate = 2 messages/s: the third message waits until a second has passed."""
    import newsletter_mailer.send as send_mod

    toml = folder / "newsletter.toml"
    toml.write_text(toml.read_text().replace("max_consecutive_failures = 10",
                                             "max_consecutive_failures = 10\nrate = 2"))
    clock = [1000.0]
    waits: list[float] = []

    def fake_sleep(s: float) -> None:
        waits.append(s)
        clock[0] += s

    monkeypatch.setattr(send_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(send_mod.time, "sleep", fake_sleep)
    r = send("--yes")
    assert r.exit_code == 0, r.output
    assert len(messages(folder)) == 3
    assert waits == [pytest.approx(1.0)]


# --- one batch: ledger 'sending' → provider → ledger result ---------------------------------


class _Watched:
    """The real outbox provider, asked what the ledger says while it sends (or made to fail)."""

    def __init__(self, inner, ledger, fail: BaseException | None = None):
        self.inner, self.ledger, self.fail = inner, ledger, fail
        self.name = inner.name
        self.seen: dict = {}

    def send(self, batch):
        self.seen = self.ledger.states("mini")
        if self.fail is not None:
            raise self.fail
        return self.inner.send(batch)


@pytest.fixture
def batch_parts(folder: Path):
    from newsletter_mailer.send import Options, Plan, Summary, prepare

    p = prepare(Options(issue=Path("issues/mini.yaml"), provider="outbox", outbox=folder / "outbox",
                        state=folder / ".newsletter"))
    p.provider.open()
    ledger = p.state.ledger()
    batch = [p.recipient("ann@example.org", "Ann", {}), p.recipient("Bob@example.org", "Bob", {})]
    yield p, ledger, batch, Summary(plan=Plan(), provider="outbox")
    ledger.close()


def test_deliver_batch_records_sending_before_and_the_outcome_after(batch_parts, folder: Path):
    from newsletter_mailer.send import deliver_batch

    p, ledger, batch, summary = batch_parts
    provider = _Watched(p.provider, ledger)
    deliver_batch(ledger, "mini", provider, batch, summary)
    assert provider.seen == {"ann@example.org": ("sending", False), "bob@example.org": ("sending", False)}
    assert ledger_rows(folder) == {"ann@example.org": "sent", "bob@example.org": "sent"}
    assert (summary.sent, summary.failed, summary.uncertain, summary.in_a_row) == (2, 0, 0, 0)
    assert set(messages(folder)) == {"ann@example.org", "Bob@example.org"}


def test_deliver_batch_refused_as_a_whole_records_failed_and_raises(batch_parts, folder: Path):
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.send import deliver_batch

    p, ledger, batch, summary = batch_parts
    provider = _Watched(p.provider, ledger, fail=NewsletterError("refused the key"))
    with pytest.raises(NewsletterError, match="refused the key"):
        deliver_batch(ledger, "mini", provider, batch, summary)
    assert ledger_rows(folder) == {"ann@example.org": "failed", "bob@example.org": "failed"}
    assert (summary.sent, summary.failed, summary.uncertain) == (0, 2, 0)
    assert messages(folder) == {}


def test_deliver_batch_interrupted_records_uncertain_and_raises(batch_parts, folder: Path):
    from newsletter_mailer.send import deliver_batch

    p, ledger, batch, summary = batch_parts
    provider = _Watched(p.provider, ledger, fail=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        deliver_batch(ledger, "mini", provider, batch, summary)
    assert ledger_rows(folder) == {"ann@example.org": "uncertain", "bob@example.org": "uncertain"}
    assert (summary.sent, summary.failed, summary.uncertain) == (0, 0, 2)


def test_interrupted_batch_keeps_each_message_id_chosen_before_the_attempt(batch_parts, folder: Path):
    """The 'sending' row already has the Message-ID the message carries; an interrupted attempt keeps it."""
    from newsletter_mailer.send import deliver_batch

    p, ledger, batch, summary = batch_parts
    assert all(r.message_id for r in batch) and batch[0].message_id != batch[1].message_id
    with pytest.raises(KeyboardInterrupt):
        deliver_batch(ledger, "mini", _Watched(p.provider, ledger, fail=KeyboardInterrupt()), batch, summary)
    rows = {r.email: (r.status, r.message_id) for r in ledger.rows("mini")}
    assert rows == {"ann@example.org": ("uncertain", batch[0].message_id),
                    "bob@example.org": ("uncertain", batch[1].message_id)}
    deliver_batch(ledger, "mini", p.provider, batch, summary)  # the same recipients, now delivered
    sent = {e: m["Message-ID"] for e, m in messages(folder).items()}
    assert {r.email: r.message_id for r in ledger.rows("mini")} == {
        "ann@example.org": sent["ann@example.org"], "bob@example.org": sent["Bob@example.org"]}
    assert sent["ann@example.org"] == batch[0].message_id
