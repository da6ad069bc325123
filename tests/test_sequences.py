"""Welcome sequences (sequences/): steps at their times, once each, on SQLite and PostgreSQL,
with a clock the tests control (no sleeping)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from newsletter_mailer.audience.store import Change
from newsletter_mailer.sequences import members
from newsletter_mailer.sequences.run import Runner
from newsletter_mailer.settings import load_settings
from newsletter_mailer.state.handle import State
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE

DAY = 86400
T0 = 1_900_000_000  # the tests' own time: far from the machine's clock
SECRET = "nyBGLxNdygeKZjesJ_twKBIfmHQP_dEMIBN9sdJAvw4"
STEPS = (("1-hello", "0"), ("2-how-to-help", "3d"), ("3-training", "10d"))


def write_sequence(folder: Path, steps=STEPS, start: str = "confirmed", extra: str = "") -> None:
    (folder / "sequences" / "welcome").mkdir(parents=True, exist_ok=True)
    lines = [f"start: {start}", extra, "steps:"]
    for slug, after in steps:
        issue = folder / "sequences" / "welcome" / f"{slug}.yaml"
        if not issue.exists():
            issue.write_text(MINI_ISSUE.replace("Hello", f"Step {slug}", 1), encoding="utf-8")
        lines += [f"  - issue: sequences/welcome/{slug}.yaml", f"    after: {after}"]
    (folder / "sequences" / "welcome.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def newsletter(folder: Path, steps=STEPS, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_SETTINGS, folder / "newsletter.toml")
    write_sequence(folder, steps, **kw)
    return folder


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def runner(folder: Path, url: str | None, clock: Clock, **kw) -> Runner:
    settings, settings_dir = load_settings(folder / "newsletter.toml")
    return Runner(settings, settings_dir, State(folder / "state", url), {"NEWSLETTER_SECRET": SECRET},
                  clock=clock, **kw)


def enrol(folder: Path, url: str | None, emails, at: int, name: str = "welcome", state: str = "state") -> None:
    store = State(folder / state, url).audience()
    try:
        with store.transaction():
            members.enrol(store, name, emails, at)
    finally:
        store.close()


def record(folder: Path, url: str | None, *changes: Change) -> None:
    store = State(folder / "state", url).audience()
    try:
        store.record(changes)
    finally:
        store.close()


def received(folder: Path) -> Counter:
    """(step slug, address) -> messages in the outbox."""
    out: Counter = Counter()
    for path in (folder / "outbox").glob("*/*.eml"):
        if path.parent.name == "_confirm":  # the sign-ups' confirmation mails
            continue
        out[(path.parent.name, path.name.rsplit("-", 1)[0])] += 1
    return out


def test_each_step_at_its_time_once(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["a@example.org", "b@example.org"], T0)
    run = runner(folder, database_url, clock).run
    assert [(s.step, s.sent) for s in run().steps] == [("1-hello", 2)]
    assert run().steps == []                                   # safe every minute: nothing twice
    clock.t = T0 + 3 * DAY - 1
    assert run().steps == []                                   # none early
    clock.t = T0 + 3 * DAY
    assert [(s.step, s.sent) for s in run().steps] == [("2-how-to-help", 2)]
    clock.t = T0 + 10 * DAY
    assert [(s.step, s.sent) for s in run().steps] == [("3-training", 2)]
    clock.t = T0 + 30 * DAY
    assert run().steps == []
    got = received(folder)
    assert got == Counter({(s, e): 1 for s, _ in STEPS for e in ("a@example.org", "b@example.org")})
    ledger = State(folder / "state", database_url).ledger()
    try:
        assert ledger.counts("sequence:welcome:2-how-to-help")["sent"] == 2
    finally:
        ledger.close()


def test_an_unsubscribe_between_steps_stops_the_rest(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["stays@example.org", "leaves@example.org", "bounces@example.org"], T0)
    run = runner(folder, database_url, clock).run
    assert run().steps[0].sent == 3
    record(folder, database_url, Change("leaves@example.org", "unsubscribed", "link"),
           Change("bounces@example.org", "bounced", "mailbox"))
    for days in (3, 10, 20):
        clock.t = T0 + days * DAY
        run()
    got = received(folder)
    assert {e for (s, e) in got if s != "1-hello"} == {"stays@example.org"}
    from newsletter_mailer.sequences.model import find
    from newsletter_mailer.sequences.status import step_counts

    counts = step_counts(State(folder / "state", database_url), find("welcome", folder), int(clock.t))
    assert counts["2-how-to-help"]["left"] == 2 and counts["3-training"]["sent"] == 1


def test_a_stopped_runner_sends_one_step_a_run_with_the_gap(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock(T0 + 30 * DAY)   # stopped for a month
    enrol(folder, database_url, ["late@example.org"], T0)
    run = runner(folder, database_url, clock).run
    assert [s.step for s in run().steps] == ["1-hello"]
    clock.t += DAY - 60
    assert run().steps == []                                   # min_gap: a day between two steps
    clock.t += 60
    assert [s.step for s in run().steps] == ["2-how-to-help"]
    clock.t += DAY
    assert [s.step for s in run().steps] == ["3-training"]
    assert sum(received(folder).values()) == 3


def test_steps_are_keyed_by_slug_when_the_file_changes(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["ahead@example.org"], T0)
    run = runner(folder, database_url, clock).run
    run()
    clock.t = T0 + 3 * DAY
    run()                                                      # ahead: past step 2
    enrol(folder, database_url, ["behind@example.org"], T0 + 3 * DAY)
    run()                                                      # behind: past step 1
    # a new step between 1 and 2, and one at the end
    write_sequence(folder, (STEPS[0], ("1b-extra", "1d"), STEPS[1], STEPS[2], ("4-end", "12d")))
    for days in (4, 6, 8, 10, 12, 14, 16):
        clock.t = T0 + days * DAY
        run()
    got = received(folder)
    assert ("1b-extra", "ahead@example.org") not in got        # already past it: never sent an earlier step
    assert got[("1b-extra", "behind@example.org")] == 1
    assert got[("4-end", "ahead@example.org")] == 1 and got[("4-end", "behind@example.org")] == 1
    assert max(got.values()) == 1


def test_a_step_with_an_error_stops_that_step_for_everyone_with_one_line(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    bad = folder / "sequences" / "welcome" / "2-how-to-help.yaml"
    bad.write_text(MINI_ISSUE.replace("{{ school_year | default(\"all years\") }}", "{{ school_year }}"),
                   encoding="utf-8")
    enrol(folder, database_url, ["a@example.org"], T0)
    runner(folder, database_url, clock).run()
    enrol(folder, database_url, ["b@example.org"], T0 + 3 * DAY)
    clock.t = T0 + 3 * DAY
    report = runner(folder, database_url, clock).run()
    assert [(s.step, s.sent) for s in report.steps] == [("1-hello", 1), ("2-how-to-help", 0)]
    [error] = report.errors
    assert "step 2-how-to-help" in error.format() and "school_year" in error.format()
    assert "\n" not in error.format() and report.exit_code == 2  # bad input: exit 2
    assert set(received(folder)) == {("1-hello", "b@example.org"), ("1-hello", "a@example.org")}


def test_dry_run_sends_and_changes_nothing(tmp_path, database_url):
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["a@example.org"], T0)
    report = runner(folder, database_url, clock, dry_run=True).run()
    assert [(s.step, s.would_send, s.sent) for s in report.steps] == [("1-hello", 1, 0)]
    assert not received(folder)
    assert runner(folder, database_url, clock).run().steps[0].sent == 1


def test_a_sent_row_without_the_reader_moved_on_is_not_sent_again(tmp_path, database_url):
    """Killed between the ledger's 'sent' and the reader's move: the rerun moves them on."""
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["a@example.org"], T0)
    runner(folder, database_url, clock).run()
    store = State(folder / "state", database_url).audience()
    try:
        with store.transaction():
            store.db.execute("UPDATE sequence_readers SET last_step=NULL, passed='', last_at=NULL")
    finally:
        store.close()
    report = runner(folder, database_url, clock).run()
    assert [(s.sent, s.moved_on) for s in report.steps] == [(0, 1)]
    assert sum(received(folder).values()) == 1


def test_report_lists_the_steps_beside_the_issues(tmp_path, database_url):
    from newsletter_mailer.report.numbers import archive

    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["a@example.org", "b@example.org"], T0)
    runner(folder, database_url, clock).run()
    record(folder, database_url, Change("b@example.org", "unsubscribed", "link", issue="1-hello"))  # its link
    [row] = archive(folder, State(folder / "state", database_url))
    assert row.slug == "sequence:welcome:1-hello" and row.delivery.sent == 2 and row.feedback.unsubscribes == 1


def test_hostile_names_among_good_readers_never_reach_a_header(tmp_path, database_url):
    """Names come from strangers (the sign-up form): the ones that cannot go into a header are
    left out (the default greets them), the readers still get their step, the others as typed."""
    import email
    import email.policy

    folder, clock = newsletter(tmp_path / "nl"), Clock()
    names = {"good1@example.org": "Ann", "crlf@example.org": "Eve\r\nBcc: victim@example.org",
             "word@example.org": "=?utf-8?q?=0D=0ABcc:_victim@example.org?=", "good2@example.org": "Bob Ø",
             "long@example.org": "x" * 5000, "esc@example.org": "a\x1b[31mb", "good3@example.org": "<b>Cy</b>"}
    record(folder, database_url, *(Change(e, "subscribed", "form", name=n) for e, n in names.items()))
    enrol(folder, database_url, list(names), T0)
    [step] = runner(folder, database_url, clock).run().steps
    assert step.sent == len(names)
    subjects = {}
    for path in (folder / "outbox" / "1-hello").glob("*.eml"):
        mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert mail["Bcc"] is None and "victim" not in str(mail["Subject"])
        subjects[str(mail["To"]).split("<")[-1].rstrip(">")] = str(mail["Subject"])
    assert subjects["good1@example.org"] == "Step 1-hello Ann"
    assert subjects["good2@example.org"] == "Step 1-hello Bob Ø"
    assert subjects["crlf@example.org"] == subjects["word@example.org"] == "Step 1-hello friend"


def test_a_second_runner_skips_a_sequence_another_is_sending(tmp_path, database_url):
    """The sequence's send lock: held elsewhere (cron beside serve, another host), the run skips it."""
    folder, clock = newsletter(tmp_path / "nl"), Clock()
    enrol(folder, database_url, ["a@example.org"], T0)
    held = State(folder / "state", database_url).send_lock("sequence.welcome")
    try:
        report = runner(folder, database_url, clock).run()
        assert report.steps == [] and len(report.busy) == 1 and "is being sent from" in report.busy[0]
        assert report.exit_code == 0 and not received(folder)
    finally:
        held.release()
    assert runner(folder, database_url, clock).run().steps[0].sent == 1
