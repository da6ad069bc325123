"""Issue #20's rough edges, as a newcomer met them: one-line usage errors, help and --version,
exit codes that agree, the settings found and described, and plain words for bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_LIST

runner = CliRunner()


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture
def nl(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "nxR8cct1LdYjJm8TNGGnKRp681D-t7Rh6qbr6ktENHw")
    for var in ("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SENDGRID_API_KEY", "SENDGRID_API_HOST"):
        monkeypatch.delenv(var, raising=False)
    shutil.copy(EXAMPLE_LIST, newsletter_dir / "subscribers.csv")
    return newsletter_dir


# Point 12: help, --version, usage errors -------------------------------------------------------

def test_bare_newsletter_prints_help_and_exits_0():
    for args in ((), ("audience",), ("state",)):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert r.stdout.startswith("Usage: newsletter"), r.stdout
        assert "Commands:" in r.stdout


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    r = run("--version")
    assert r.exit_code == 0
    assert r.stdout == f"newsletter {version('newsletter-mailer')}\n"


@pytest.mark.parametrize("args, line", [
    (("send", "x.yaml", "--lsit", "a.csv"),
     "error: newsletter send: no such option --lsit (did you mean --list? `newsletter send --help` lists what it takes)"),
    (("sned",), "error: newsletter: no such command 'sned' (did you mean 'send'? `newsletter --help` lists what it takes)"),
    (("audience", "lst"), "error: newsletter audience: no such command 'lst' (did you mean 'list'? "
                          "`newsletter audience --help` lists what it takes)"),
    (("send",), "error: newsletter send: missing argument 'ISSUE' (`newsletter send --help` lists what it takes)"),
    (("send", "a.yaml", "b.yaml"), "error: newsletter send: got unexpected extra argument(s) (b.yaml) "
                                   "(`newsletter send --help` lists what it takes)"),
])
def test_usage_errors_are_one_line_in_the_tools_style(args, line):
    r = run(*args)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [line]
    assert "Usage:" not in r.output and "Try '" not in r.output


def test_a_bad_option_value_is_one_line_too():
    r = run("compose", "x.yaml", "--port", "abc")
    assert r.exit_code == 2
    [line] = r.stderr.splitlines()
    assert line.startswith("error: newsletter compose: invalid value for '--port': ")


def test_help_shows_plain_argument_names():
    for args in (("send", "--help"), ("report", "--help"), ("audience", "suppress", "--help"), ("init", "--help")):
        r = run(*args)
        assert r.exit_code == 0
        for junk in ("{", "[[", "<path>", "<list[str]>", "<str>"):
            assert junk not in r.stdout, (args, r.stdout)
    assert "Usage: newsletter send [OPTIONS] ISSUE\n" in run("send", "--help").stdout
    assert "Usage: newsletter report [OPTIONS] [ISSUE]\n" in run("report", "--help").stdout
    assert "Usage: newsletter audience suppress [OPTIONS] ADDR...\n" in run("audience", "suppress", "--help").stdout


# A settings schema ------------------------------------------------------------------------------

def test_schema_settings_prints_the_json_schema_of_newsletter_toml(nl: Path):
    import json
    import tomllib

    import jsonschema

    r = run("schema", "--settings")
    assert r.exit_code == 0, r.output
    schema = json.loads(r.stdout)
    assert schema["title"] == "newsletter.toml"
    assert {"name", "from_email", "web_base_url", "brand", "delivery", "web"} <= set(schema["properties"])
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(tomllib.loads((nl / "newsletter.toml").read_text(encoding="utf-8")), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "brnad": {}}, schema)
    issue = json.loads(run("schema").stdout)  # the issue format stays the default
    assert "sections" in issue["properties"] and "from_email" not in issue["properties"]


def test_a_settings_typo_points_to_schema_settings(nl: Path):
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[brand]", "[brnad]"), encoding="utf-8")
    r = run("check", "issues/mini.yaml")
    assert r.exit_code == 2
    [line] = r.stderr.splitlines()
    assert line.startswith("error: newsletter.toml:") and "brnad: is not a known key" in line
    assert line.endswith("(check the spelling; see `newsletter schema --settings`)"), line
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8") + "subjet: x\n", encoding="utf-8")
    toml.write_text(toml.read_text(encoding="utf-8").replace("[brnad]", "[brand]"), encoding="utf-8")
    assert run("check", "issues/mini.yaml").stderr.rstrip().endswith("see `newsletter schema`)")


def test_init_writes_the_schema_comment_and_the_schema_beside_it(tmp_path: Path):
    import json
    import tomllib

    import jsonschema

    r = run("init", tmp_path / "news")
    assert r.exit_code == 0, r.output
    toml = (tmp_path / "news" / "newsletter.toml").read_text(encoding="utf-8")
    assert toml.startswith("#:schema ./newsletter.schema.json\n")  # Taplo's directive: first line
    schema = json.loads((tmp_path / "news" / "newsletter.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(tomllib.loads(toml), schema)
    assert schema == json.loads(run("schema", "--settings").stdout)


def test_init_lists_the_tour_in_the_order_a_new_editor_follows_it(tmp_path: Path):
    out = run("init", tmp_path / "news").stdout
    steps = ["compose issues/", "test-send issues/", "send issues/", "newsletter serve", "report issues/"]
    at = [out.index(s) for s in steps]
    assert at == sorted(at), out
    assert out.count("cd ") == 1  # once in the folder, the other steps run there


# Finding the settings (point 14) ----------------------------------------------------------------

def test_settings_are_found_next_to_the_issue_from_the_folder_above(nl: Path, monkeypatch):
    monkeypatch.chdir(nl.parent)
    issue = Path(nl.name) / "issues" / "mini.yaml"
    r = run("check", issue)
    assert r.exit_code == 0, r.output
    r = run("--verbose", "check", issue)
    assert f"settings: {Path(nl.name) / 'newsletter.toml'}" in r.stderr, r.stderr
    r = run("send", issue, "--list", nl / "subscribers.csv", "--yes")
    assert r.exit_code == 0, r.output
    assert (nl / ".newsletter").is_dir() and (nl / "outbox" / "mini").is_dir()  # state next to newsletter.toml
    assert not (nl.parent / ".newsletter").exists()
    r = run("status", issue)
    assert r.exit_code == 0 and "mini: sent 7," in r.stdout, r.output


def test_the_current_folders_settings_win_and_verbose_says_which(nl: Path, monkeypatch):
    nested = nl / "issues" / "newsletter.toml"  # nearer the issue, but the current folder comes first
    nested.write_text("this is not toml [", encoding="utf-8")
    r = run("check", "issues/mini.yaml", "--verbose")
    assert r.exit_code == 0, r.output
    assert "settings: newsletter.toml" in r.stderr
    monkeypatch.chdir(nl / "issues")
    r = run("check", "mini.yaml")
    assert r.exit_code == 2 and "newsletter.toml:1: TOML syntax error" in r.stderr


def test_settings_not_found_says_where_it_looked(tmp_path_factory, monkeypatch):
    from tests.conftest import MINI_ISSUE

    bare = tmp_path_factory.mktemp("bare")
    (bare / "x.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    monkeypatch.chdir(bare)
    r = run("check", "x.yaml")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        "error: newsletter.toml: settings file not found in the current folder or next to x.yaml and the "
        "folders above it (pass --config PATH, or run `newsletter init` to create one)"]


# Exit codes (point 4, 13) -----------------------------------------------------------------------

def _raise_warnings(nl: Path) -> None:
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[brand]", "[checks]\nwarnings_as_errors = [\"placeholder\"]\n\n[brand]"),
                    encoding="utf-8")


def test_a_failed_check_exits_1_from_check_and_send_and_send_names_the_settings(nl: Path):
    _raise_warnings(nl)
    assert run("check", "issues/mini.yaml").exit_code == 1
    for mode in ("--dry-run", "--yes"):
        r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", mode)
        assert r.exit_code == 1, r.output
        [line] = r.stderr.splitlines()
        assert line.startswith("error: newsletter.toml: check failed: web_base_url is on example.org"), line
    assert not (nl / "outbox").exists()


def test_a_failed_check_of_the_issue_names_the_issue(nl: Path):
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("[brand]", "[checks]\nwarnings_as_errors = [\"inbox\"]\n\n[brand]"),
                    encoding="utf-8")
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("preheader: A short preview line\n", ""),
                     encoding="utf-8")
    assert run("check", "issues/mini.yaml").exit_code == 1
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: issues/mini.yaml: check failed: no preheader"), r.stderr


def test_no_at_the_send_prompt_exits_0_and_sends_nothing(nl: Path):
    import os
    import subprocess
    import sys

    primary, secondary = os.openpty()  # a real terminal, so send asks
    try:
        os.write(primary, b"n\n")
        p = subprocess.run([sys.executable, "-m", "newsletter_mailer", "send", "issues/mini.yaml",
                            "--list", "subscribers.csv"], cwd=nl, stdin=secondary, capture_output=True,
                           text=True, timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "Send 7 recipient(s) via outbox?" in p.stdout and p.stdout.rstrip().endswith("nothing sent")
    assert not (nl / "outbox").exists()


# Point 16: extreme --at times -------------------------------------------------------------------

@pytest.mark.parametrize("at", ["0001-01-01 00:00", "9999-12-31T23:59-12:00", "0001-01-01T00:00+14:00",
                                "9999-12-31 23:59"])
def test_extreme_at_times_are_one_line_exit_2(nl: Path, at: str):
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--provider", "sendgrid", "--at", at,
            "--tz", "Etc/GMT+12", "--dry-run")
    assert r.exit_code == 2, r.output
    [line] = r.stderr.splitlines()
    assert line.startswith("error: --at: "), line


def test_any_time_in_any_zone_is_a_time_or_one_clear_error():
    from datetime import datetime, timedelta, timezone
    from zoneinfo import available_timezones

    from hypothesis import given, settings, strategies as st

    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.schedule import check_hold, parse_at

    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    zones = st.one_of(st.none(), st.sampled_from(sorted(available_timezones())))
    offsets = st.one_of(st.none(), st.integers(-24 * 60 + 1, 24 * 60 - 1).map(
        lambda m: timezone(timedelta(minutes=m))))
    extremes = st.sampled_from([datetime.min, datetime.max, datetime(1, 1, 1, 12), datetime(9999, 12, 31, 0, 1)])
    moments = st.one_of(extremes, st.datetimes())

    @settings(max_examples=400, deadline=None)
    @given(moments, offsets, zones, zones, st.sampled_from(["iso", "space"]))
    def check(moment, offset, tz, default_tz, style):
        text = moment.replace(tzinfo=offset).isoformat(sep="T" if style == "iso" else " ", timespec="minutes")
        try:
            when = parse_at(text, tz, default_tz, now)
        except NewsletterError as exc:
            assert "\n" not in exc.format() and exc.field == "--at"
            return
        assert when.at > now
        try:
            check_hold(when, now, timedelta(hours=72), "SendGrid")
        except NewsletterError as exc:
            assert "\n" not in exc.format()

    check()


# Points 5, 6, 7: the list ------------------------------------------------------------------------

def test_invalid_rows_are_skipped_and_listed_and_strict_makes_them_an_error(nl: Path):
    r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "invalid: 1 (line 7: 'not-an-address':" in r.stdout
    for mode in ("--dry-run", "--yes"):
        r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--strict", mode)
        assert r.exit_code == 2, r.output
        [line] = r.stderr.splitlines()
        assert line.startswith("error: subscribers.csv:7: 1 invalid row(s) (line 7); line 7: 'not-an-address':"), line
        assert line.endswith("(fix or remove them, or leave out --strict to skip them; nothing was sent)")
    assert not (nl / "outbox").exists()
    clean = nl / "clean.csv"
    clean.write_text("".join(l for l in (nl / "subscribers.csv").read_text(encoding="utf-8").splitlines(True)
                             if "not-an-address" not in l), encoding="utf-8")
    r = run("send", "issues/mini.yaml", "--list", clean, "--strict", "--yes")
    assert r.exit_code == 0 and "sent: 7," in r.stdout, r.output


def test_strict_also_refuses_a_row_whose_value_would_break_the_subject(nl: Path):
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("subject: 'Hello {{ name | default(\"friend\") }}'",
                                                               "subject: 'Hello {{ school_year }}'"), encoding="utf-8")
    rows = "email,name,school_year\na@example.org,A,Year 7\nb@example.org,B,\"Year\r\nBcc: x@evil.test\"\n"
    (nl / "hostile.csv").write_bytes(rows.encode("utf-8"))
    assert run("send", "issues/mini.yaml", "--list", "hostile.csv", "--dry-run").exit_code == 0
    r = run("send", "issues/mini.yaml", "--list", "hostile.csv", "--dry-run", "--strict")
    assert r.exit_code == 2 and r.stderr.startswith("error: hostile.csv:3: 1 invalid row(s) (line 3)"), r.output


@pytest.mark.parametrize("header", ["Email Address", "E-mail", "email_address", "E-Mail Address"])
def test_send_list_takes_the_address_column_by_the_names_audience_import_knows(nl: Path, header: str):
    from newsletter_mailer.audience.imports import _EMAIL

    assert header.lower() in _EMAIL  # one table for both
    (nl / "export.csv").write_text(f"{header},First Name,Last Name\nann@example.org,Ann,Lee\n"
                                   f"not an address,Bad,Row\nbob@example.com,Bob,Ray\n", encoding="utf-8")
    r = run("send", "issues/mini.yaml", "--list", "export.csv", "--yes")
    assert r.exit_code == 0, r.output
    assert "sent: 2," in r.stdout and "invalid: 1 (line 3:" in r.stdout
    (nl / "suppress.csv").write_text(f"{header}\nbob@example.com\n", encoding="utf-8")
    r = run("send", "issues/mini.yaml", "--list", "export.csv", "--suppress", "suppress.csv", "--dry-run")
    assert r.exit_code == 0 and "nothing to send" in r.stdout, r.output


def test_a_list_without_any_address_column_is_still_refused(nl: Path):
    (nl / "x.csv").write_text("mail,name\nann@example.org,Ann\n", encoding="utf-8")
    r = run("send", "issues/mini.yaml", "--list", "x.csv", "--dry-run")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == ["error: x.csv:1: no 'email' column; the header row must name one "
                                     "(e.g. email or Email Address)"]


def test_a_send_without_list_says_only_sign_ups_are_planned(nl: Path):
    from newsletter_mailer.audience.store import Change
    from newsletter_mailer.state import State

    store = State(nl / ".newsletter").audience()
    try:
        store.record([Change("new.reader@example.org", "subscribed", "form", name="New Reader")])
    finally:
        store.close()
    r = run("send", "issues/mini.yaml", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "note: no --list given: only the audience store's confirmed sign-ups are planned" in r.stdout
    assert "note: no --list" not in run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--dry-run").stdout


# Point 11 ---------------------------------------------------------------------------------------

def test_audience_list_without_status_says_each_addresss_status(nl: Path):
    from newsletter_mailer.audience.store import Change
    from newsletter_mailer.state import State

    store = State(nl / ".newsletter").audience()
    try:
        store.record([Change("ann@example.org", "unsubscribed", "cli"),
                      Change("bobby.long@example.org", "subscribed", "form"),
                      Change("cy@example.org", "bounced", "mailbox")])
    finally:
        store.close()
    lines = run("audience", "list").stdout.splitlines()
    assert sorted(lines) == ["ann@example.org         unsubscribed", "bobby.long@example.org  subscribed",
                             "cy@example.org          bounced"]
    assert run("audience", "list", "--status", "bounced").stdout.splitlines() == ["cy@example.org"]


# Point 13: inbox --dry-run lines ------------------------------------------------------------------

def test_inbox_dry_run_lines_say_what_without_a_mailbox_key():
    from newsletter_mailer.audience import bounces
    from newsletter_mailer.audience.inbox import _line

    line = _line("0", bounces.Verdict(bounces.BOUNCE, "x@example.org", "mini", True, "5.1.1 no such user"))
    assert line == "bounced x@example.org (issue mini): 5.1.1 no such user"
    assert _line("17", bounces.Verdict(bounces.BOUNCE, "y@example.org")) == "soft bounce counted y@example.org"


# Point 9 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("date, words", [("2020-02-30", "date: 2020-02-30 is not a date: day is out of range for month"),
                                         ("30/02/2020", "date: '30/02/2020' is not a date written YYYY-MM-DD")])
def test_an_impossible_date_in_plain_words(nl: Path, date: str, words: str):
    issue = nl / "issues" / "mini.yaml"
    issue.write_text(issue.read_text(encoding="utf-8").replace("date: 2020-09-01", f"date: {date}"), encoding="utf-8")
    r = run("check", "issues/mini.yaml")
    assert r.exit_code == 2
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: issues/mini.yaml:3: {words}"), line
    assert "valid date or datetime" not in line


# Point 8: YAML mistakes on the right line, in plain words ---------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ('subject: "Hello\ndate: 2020-09-01\nsections:\n  - heading: One\n    body: Text\n', 1,
     "a quote opened on this line is never closed"),
    ('subject: "Hello\ndate: "2020-09-01"\nsections:\n  - heading: One\n    body: Text\n', 1,
     "a quote opened on this line is never closed"),
    ("subject: Hi\ndate: 2020-09-01\nsections:\n  - heading: 'One\n    body: Text\n", 4,
     "a quote opened on this line is never closed"),
    ('subject: "Hello" world\ndate: 2020-09-01\n', 1, "this line does not fit the lines above it"),
    ("subject: Hello: world\ndate: 2020-09-01\n", 1, "a ': ' inside a value"),
])
def test_yaml_mistakes_are_named_on_their_line_in_plain_words(nl: Path, text: str, line: int, words: str):
    (nl / "issues" / "bad.yaml").write_text(text, encoding="utf-8")
    r = run("check", "issues/bad.yaml")
    assert r.exit_code == 2
    [said] = r.stderr.splitlines()
    assert said.startswith(f"error: issues/bad.yaml:{line}: YAML syntax error: {words}"), said
    assert "<block end>" not in said and "scalar" not in said


def test_quotes_that_are_closed_are_not_taken_for_open_ones(nl: Path):
    (nl / "issues" / "ok.yaml").write_text(
        'subject: "He said \\"hi\\""\ndate: 2020-09-01\nsections:\n  - heading: \'It\'\'s\'\n    body: Text\n',
        encoding="utf-8")
    r = run("check", "issues/ok.yaml")
    assert "YAML syntax error" not in r.output, r.output


# Point 3: SendGrid without a key ----------------------------------------------------------------

def test_sendgrid_without_a_key_is_one_line_without_a_no_sync_detour(nl: Path, monkeypatch):
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    for extra in ([], ["--no-sync"], ["--dry-run"]):
        r = run("send", "issues/mini.yaml", "--list", "subscribers.csv", "--provider", "sendgrid", "--yes", *extra)
        assert r.exit_code == 2, (extra, r.output)
        [said] = r.stderr.splitlines()
        assert said.startswith("error: SENDGRID_API_KEY is not set") and "--no-sync" not in said, said


# Point 10: the preview shows the unsubscribe link readers get -----------------------------------

def test_the_preview_shows_the_unsubscribe_link_in_the_form_readers_get(nl: Path):
    r = run("compose", "issues/mini.yaml", "--out", "build")
    assert r.exit_code == 0, r.output
    page = (nl / "build" / "preview.html").read_text(encoding="utf-8")
    from newsletter_mailer.settings import load_settings

    settings = load_settings(nl / "newsletter.toml")[0]
    assert re.search(re.escape(settings.web.base) + r"/u/[A-Za-z0-9_-]{22,}", page), "no /u/<token> link"
    assert settings.web_base + "/unsubscribe" not in page


# Point 13: --watch names its warnings; state copy --to blames --to ---------------------------------

def test_the_watch_line_names_the_checks_that_need_a_look():
    from newsletter_mailer.checks import summary
    from newsletter_mailer.checks.result import Check

    checks = [Check("ok", "fine", "size"), Check("warning", "a", "placeholder"), Check("warning", "b", "placeholder"),
              Check("warning", "c", "return-path"), Check("error", "d", "contrast")]
    assert summary(checks) == "1 check failed (contrast); 3 warnings (placeholder, return-path)"
    assert summary([Check("ok", "fine", "size")]) == "checks ok"


def test_state_copy_to_an_unreachable_database_blames_the_to_url(nl: Path, pg_cluster):
    from newsletter_mailer.state import State

    State(nl / ".newsletter").audience().close()
    port = pg_cluster.port + 1 if pg_cluster.port < 65535 else pg_cluster.port - 1
    r = run("state", "copy", "--to", f"postgresql://news@127.0.0.1:{port}/news")
    assert r.exit_code == 2
    [said] = r.stderr.splitlines()
    assert "check the --to URL" in said and "NEWSLETTER_DATABASE_URL" not in said, said
