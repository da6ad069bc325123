"""Subject tests (issue 24): the draw, the winner rule against hand-computed cases, and a test on
10,000 readers in the outbox — sample sizes, one variant each, the finish once, kills resumed."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer import ab_test
from newsletter_mailer.audience import clicks
from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.ledger import key
from newsletter_mailer.state import State

runner = CliRunner()
SECRET = "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA"


@pytest.mark.parametrize("a, n_a, b, n_b, winner, z, significant", [
    # pooled p = 0.045, se = sqrt(0.045 × 0.955 × (1/1000 + 1/1000)) = 0.009271, z = 0.03 / se = 3.236, p = 0.0012
    (30, 1000, 60, 1000, "B", 3.236, True),
    (60, 1000, 30, 1000, "A", -3.236, True),   # A better: A, said so
    # pooled 0.034, se = 0.008105, z = 0.008 / se = 0.987, p = 0.32: not significant, the issue's own subject
    (30, 1000, 38, 1000, "A", 0.987, False),
    (5, 100, 5, 100, "A", 0.0, False),          # a tie
    (0, 10, 0, 10, "A", 0.0, False),            # nobody clicked: no test at all
    (0, 0, 3, 10, "A", 0.0, False),             # an empty half
])
def test_the_winner_rule_against_hand_computed_cases(a, n_a, b, n_b, winner, z, significant):
    got, why = ab_test.decide(a, n_a, b, n_b)
    assert got == winner
    assert ab_test.z_test(a, n_a, b, n_b)[0] == pytest.approx(z, abs=0.001)
    assert ("at the 5% level" in why) and (("no significant difference" in why) != significant)
    if not significant:
        assert "the issue's own subject is sent" in why


@pytest.mark.parametrize("n", [1, 2, 7, 999, 10_000])
@pytest.mark.parametrize("share", [0.2, 0.5, 0.03])
def test_the_draw_takes_the_share_within_one_and_halves_it(n, share):
    keys = [f"reader.{i}@example.org" for i in range(n)]
    draw = ab_test.split(keys, share, b"seed")
    assert abs(len(draw) - share * n) <= 1
    sizes = Counter(draw.values())
    assert abs(sizes["A"] - sizes["B"]) <= 1
    assert draw == ab_test.split(list(reversed(keys)), share, b"seed")  # the list's order does not matter


@pytest.mark.parametrize("text", ["0%", "100%", "abc", "-5%", "1.5", "nan"])
def test_a_bad_sample_is_one_line(text):
    with pytest.raises(Exception) as caught:
        ab_test.parse_share(text)
    assert "--sample" in str(caught.value.format())


@pytest.mark.parametrize("text", ["4", "soon", "-2h", "366d", "99999999999999999999d",
                                  pytest.param("9" * 400 + "s", id="10^400s")])
def test_a_bad_or_endless_wait_is_one_line(text):
    """A wait too long for a float or the ledger's integer was an internal error (exit 70): one line instead."""
    with pytest.raises(NewsletterError) as caught:
        ab_test.parse_wait(text)
    assert "--wait" in str(caught.value.format())


N = 10_000
ISSUE = "subject: Our subject\npreheader: A preview\ndate: 2020-09-01\nintro: Hello.\nsections:\n" \
        "  - heading: One\n    body: A [story](https://example.org/story).\n"


@pytest.fixture
def newsletter(tmp_path, database_url, monkeypatch):
    from tests.conftest import EXAMPLE_SETTINGS, use_database

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    use_database(monkeypatch, database_url)
    (tmp_path / "newsletter.toml").write_text(EXAMPLE_SETTINGS.read_text(encoding="utf-8")
                                              + "\n[tracking]\nclicks = true\n", encoding="utf-8")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "ab.yaml").write_text(ISSUE, encoding="utf-8")
    (tmp_path / "list.csv").write_text("email\n" + "".join(f"r{i}@example.org\n" for i in range(N)),
                                       encoding="utf-8")
    return tmp_path, database_url


def send(folder: Path, *extra: str, now: datetime | None = None):
    from newsletter_mailer import send as send_module

    args = ["send", str(folder / "issues" / "ab.yaml"), "--list", str(folder / "list.csv"), "--config",
            str(folder / "newsletter.toml"), "--state", str(folder / "state"), "--outbox", str(folder / "outbox"),
            "--provider", "outbox", "--yes", *extra]
    if now is None:
        return runner.invoke(app, args)
    init = send_module.Options.__init__

    def at_now(self, *a, **k):  # the send's clock (Options.now), as the command line builds its options
        init(self, *a, **k)
        self.now = lambda: now

    send_module.Options.__init__ = at_now
    try:
        return runner.invoke(app, args)
    finally:
        send_module.Options.__init__ = init


def subjects(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in (folder / "outbox" / "ab").glob("*.eml"):
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        out.setdefault(msg["To"], []).append(msg["Subject"])
    return out


def click(folder: Path, url: str | None, readers: list[str], variant: str) -> None:
    store = State(folder / "state", url).audience()
    try:
        for i, r in enumerate(readers):
            clicks.record(store.db, "ab", 1, f"hash-{r}", scanner=False, now=1_800_000_000 + i * 60, variant=variant)
    finally:
        store.close()


def _kill_at(monkeypatch, call: int) -> None:
    """The outbox stops (an exception in the middle of the send) at its call-th batch, before writing it."""
    from newsletter_mailer.providers.outbox import OutboxProvider

    original, calls = OutboxProvider.send, []

    def send(self, batch):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt("killed")
        return original(self, batch)

    monkeypatch.setattr(OutboxProvider, "send", send)


@pytest.mark.slow
def test_a_subject_test_on_10000_readers_with_kills_in_both_phases(newsletter, monkeypatch):
    folder, url = newsletter
    _kill_at(monkeypatch, 3)
    first = send(folder, "--ab-subject", "Other subject", "--sample", "20%", "--wait", "4h")
    assert first.exit_code != 0, first.output  # killed in the sample's run
    monkeypatch.undo()
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    if url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    resumed = send(folder, "--ab-subject", "Other subject", "--sample", "20%", "--resend-uncertain")
    assert resumed.exit_code == 0, resumed.output
    got = subjects(folder)
    assert len(got) == 2000 and all(len(s) == 1 for s in got.values())  # each sampled reader once
    sizes = Counter(s[0] for s in got.values())
    assert sizes == {"Our subject": 1000, "Other subject": 1000}
    ledger = State(folder / "state", url).ledger()
    try:
        variants = ab_test.variants(ledger.db, "ab")
    finally:
        ledger.close()
    assert len(variants) == 2000 and all(
        (variants[key(to)] == "B") == (s == ["Other subject"]) for to, s in got.items())
    waiting = send(folder, "--ab-subject", "Other subject", "--sample", "20%")
    assert waiting.exit_code == 0 and "nothing to send until the subject test is finished" in waiting.output
    plain = send(folder)
    assert plain.exit_code == 2 and "--finish-ab" in plain.output and plain.output.count("\n") <= 2

    b_readers = [k for k, v in variants.items() if v == "B"]
    a_readers = [k for k, v in variants.items() if v == "A"]
    click(folder, url, b_readers[:90], "B")
    click(folder, url, a_readers[:40], "A")  # 9% against 4%: z = 4.56, B wins
    _kill_at(monkeypatch, 4)
    later = datetime.now(timezone.utc) + timedelta(hours=5)  # the wait is over: the same command finishes
    killed = send(folder, "--ab-subject", "Other subject", "--sample", "20%", now=later)
    assert killed.exit_code != 0, killed.output
    assert "winner: B" in killed.output and "B is better at the 5% level" in killed.output, killed.output
    monkeypatch.undo()
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    if url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", url)
    click(folder, url, a_readers[40:400], "A")  # clicks after the choice change nothing: it is recorded
    done = send(folder, "--finish-ab", "--resend-uncertain")
    assert done.exit_code == 0, done.output
    assert "winner: B" in done.output
    got = subjects(folder)
    assert len(got) == N and all(len(s) == 1 for s in got.values())  # everyone once, nobody twice
    rest = Counter(s[0] for to, s in got.items() if key(to) not in variants)
    assert rest == {"Other subject": N - 2000}
    again = send(folder, "--finish-ab")
    assert again.exit_code == 0 and "nothing to send" in again.output
    common = ["--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")]
    status = runner.invoke(app, ["status", str(folder / "issues" / "ab.yaml"), *common])
    assert "subject test: A (the issue's subject): sent 1000, clicked 400" in status.output, status.output
    assert "subject test: B 'Other subject': sent 1000, clicked 90" in status.output
    assert "subject test: winner B: A: 40 of 1000 clicked (4.0%), B: 90 of 1000 (9.0%)" in status.output
    report = runner.invoke(app, ["report", str(folder / "issues" / "ab.yaml"), "--out", str(folder / "r.html"),
                                 *common], env={"COLUMNS": "250"})
    assert report.exit_code == 0 and "Subject test" in report.output and "B 'Other subject'" in report.output
    assert "40.00% clicked" in report.output and "9.00% clicked" in report.output, report.output


def test_only_the_samples_readers_carry_their_variant_on_their_links(newsletter):
    """After the finish, the winner's readers get the winning subject but links without a variant: their
    clicks must not add to the sample's counts (the rates of status and report are the sample's)."""
    import re

    folder, url = newsletter
    (folder / "list.csv").write_text("email\n" + "".join(f"r{i}@example.org\n" for i in range(40)), encoding="utf-8")
    assert send(folder, "--ab-subject", "Other subject", "--sample", "50%").exit_code == 0
    finished = send(folder, "--finish-ab")
    assert finished.exit_code == 0 and "no significant difference" in finished.output, finished.output
    ledger = State(folder / "state", url).ledger()
    try:
        variants = ab_test.variants(ledger.db, "ab")
    finally:
        ledger.close()
    assert len(variants) == 20
    seen = 0
    for path in (folder / "outbox" / "ab").glob("*.eml"):
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        body = msg.get_body(("html",)).get_content() + msg.get_body(("plain",)).get_content()
        halves = set(re.findall(r"/c/[A-Za-z0-9_-]{15,18}\.ab\.([A-Za-z0-9_-]+)", body))
        assert len(halves) == 1, halves  # one reader half for every link of the message, both parts
        half = halves.pop()
        sampled = variants.get(key(msg["To"]))
        assert half[32:] == (sampled or ""), (msg["To"], half)
        seen += 1
    assert seen == 40
