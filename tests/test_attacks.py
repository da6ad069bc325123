"""Findings of an attacker's review, each reproduced here before its fix: the test fails on the old code."""

from __future__ import annotations

import csv
import email
import email.policy
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.message import HeaderValueError, header_value
from newsletter_mailer.validators import header_problem
from tests.conftest import MINI_ISSUE, isolated_newsletter, with_custom_unsubscribe
from tests.helpers.sinks import SendGridSink

runner = CliRunner()
API_KEY = "SG.attack-test-key-0123456789"
# Encoded-words a lenient reader decodes to a header line of the writer's choosing.
SMUGGLED = ["=?x-unknown?q?=0D=0ABcc:_e@x.com?=",   # unknown charset: decode_header raised LookupError
            "=?utf-8*en?q?=0D=0A?=",                  # an RFC 2231 language tag
            "=?utf-8?q?=E2=80=A8?=",                  # U+2028, encoded
            "=?utf-8?q?=C2=85?="]                     # NEL, encoded


@pytest.fixture
def nl(tmp_path: Path, monkeypatch) -> Path:
    return isolated_newsletter(tmp_path, monkeypatch, "Lq7vR2nXc9WtYb4KfHs8PjM3eDgZ6aUo1iN5yTkVxQw")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def outbox(folder: Path, slug: str) -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in (folder / "outbox" / slug).glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out[msg["To"].addresses[0].addr_spec] = msg
    return out


# --- 1. a smuggled encoded-word in a name fails that recipient only --------------------------------

@pytest.mark.parametrize("word", SMUGGLED)
def test_header_problem_judges_every_smuggled_word_without_raising(word):
    assert header_problem(f"Eve {word}") is not None
    with pytest.raises(HeaderValueError):
        header_value(f"Eve {word}", "Subject")


def test_a_smuggled_name_fails_that_recipient_alone_through_sendgrid(nl, tmp_path, monkeypatch):
    issue = MINI_ISSUE.replace("subject: 'Hello {{ name | default(\"friend\") }}'", "subject: 'Hello'")
    (nl / "issues" / "mini.yaml").write_text(issue, encoding="utf-8")
    rows = [[f"eve{i}@example.org", f"Eve {w}"] for i, w in enumerate(SMUGGLED)] + [["ok@example.org", "Olive"]]
    write_csv(nl / "list.csv", ["email", "name"], rows)
    with SendGridSink(tmp_path / "sg.log", API_KEY) as sink:
        monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sink.url)
        r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--provider", "sendgrid", "--yes"])
    assert r.exit_code == 1, r.output  # some failed: not an internal error (70)
    assert f"sent: 1, failed: {len(SMUGGLED)}, uncertain: 0" in r.output, r.output
    [request] = sink.requests
    assert [p["to"][0]["email"] for p in request["body"]["personalizations"]] == ["ok@example.org"]


def test_a_smuggled_name_fails_that_recipient_alone_in_the_outbox(nl):
    issue = MINI_ISSUE.replace("subject: 'Hello {{ name | default(\"friend\") }}'", "subject: 'Hello'")
    (nl / "issues" / "mini.yaml").write_text(issue, encoding="utf-8")
    write_csv(nl / "list.csv", ["email", "name"], [["eve@example.org", f"Eve {SMUGGLED[0]}"],
                                                   ["ok@example.org", "Olive"]])
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 1, r.output
    assert "sent: 1, failed: 1, uncertain: 0" in r.output, r.output
    assert set(outbox(nl, "mini")) == {"ok@example.org"}


# --- 4. raw control characters from a CSV column never reach the Subject ---------------------------

CONTROLS = ["\x0b", "\x1c", "\x7f", "\x1b[31m", "\u2028", "\x85"]


def test_control_characters_in_a_subject_value_are_skipped_at_plan_time(nl):
    issue = MINI_ISSUE.replace("subject: 'Hello {{ name | default(\"friend\") }}'",
                               "subject: 'Hello {{ house | default(\"no house\") }}'")
    (nl / "issues" / "mini.yaml").write_text(issue, encoding="utf-8")
    rows = [[f"eve{i}@example.org", "Eve", f"Red{c}x"] for i, c in enumerate(CONTROLS)]
    write_csv(nl / "list.csv", ["email", "name", "house"], rows + [["ok@example.org", "Olive", "Blue"]])
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    assert f"invalid header value: {len(CONTROLS)}" in r.output, r.output
    msgs = outbox(nl, "mini")
    assert set(msgs) == {"ok@example.org"} and msgs["ok@example.org"]["Subject"] == "Hello Blue"


@pytest.mark.parametrize("c", CONTROLS)
def test_header_value_refuses_every_control_character(c):
    with pytest.raises(HeaderValueError):
        header_value(f"Hello {c} there", "Subject")


# --- 2. a non-ASCII (IDN) address in the settings is made ASCII at load time ------------------------

def test_an_idn_unsubscribe_url_is_punycode_and_every_send_works(nl):
    toml = (nl / "newsletter.toml").read_text(encoding="utf-8")
    toml = with_custom_unsubscribe(toml).replace('unsubscribe_url = "https://example.org/unsubscribe?',
                                                 'unsubscribe_url = "https://bücher.example/abbestellen/ä?')
    (nl / "newsletter.toml").write_text(toml, encoding="utf-8")
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    assert runner.invoke(app, ["check", "issues/mini.yaml"]).exit_code == 0
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0 and "sent: 1, failed: 0, uncertain: 0" in r.output, r.output
    header = outbox(nl, "mini")["ok@example.org"]["List-Unsubscribe"]
    assert header.startswith("<https://xn--bcher-kva.example/abbestellen/%C3%A4?email=ok@example.org&token="), header


def test_an_idn_web_base_url_is_punycode_and_a_bad_one_is_refused_naming_the_field(nl):
    from newsletter_mailer.settings import load_settings

    toml = (nl / "newsletter.toml").read_text(encoding="utf-8")
    web = 'base_url = "https://example.org/news"'  # the example's [web] base_url
    (nl / "newsletter.toml").write_text(toml.replace(web, 'base_url = "https://bücher.example/ü"'),
                                        encoding="utf-8")
    settings, _ = load_settings(nl / "newsletter.toml")
    assert settings.web.base_url == "https://xn--bcher-kva.example/%C3%BC"
    (nl / "newsletter.toml").write_text(toml.replace(web, 'base_url = "https://a..ü/"'),
                                        encoding="utf-8")
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code == 2 and "base_url" in r.output and "punycode" in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2


# --- 5. a symlinked state folder is refused; a loose one is tightened -------------------------------

def test_a_symlinked_state_folder_is_refused(nl, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o777)
    (nl / ".newsletter").symlink_to(victim)
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 2 and "state folder is a link" in r.output, r.output
    assert list(victim.iterdir()) == [] and not (nl / "outbox").exists()


def test_a_world_writable_state_folder_of_ours_is_made_private(nl):
    import stat

    (nl / ".newsletter").mkdir()
    (nl / ".newsletter").chmod(0o777)
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((nl / ".newsletter").stat().st_mode) == 0o700


# --- 6. a weak or exposed secret is refused --------------------------------------------------------

@pytest.mark.parametrize("content, mode, words", [(b"", 0o600, "0 bytes"), (b"short\n", 0o600, "5 bytes"),
                                                  (b"x" * 64, 0o640, "readable by others")])
def test_a_weak_or_exposed_secret_file_is_refused(nl, monkeypatch, content, mode, words):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    (nl / ".newsletter").mkdir(mode=0o700)
    secret = nl / ".newsletter" / "secret"
    secret.write_bytes(content)
    secret.chmod(mode)
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (nl / "outbox").exists()


def test_a_short_newsletter_secret_is_refused_and_a_new_secret_file_is_strong(nl, monkeypatch):
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    monkeypatch.setenv("NEWSLETTER_SECRET", "abc")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 2 and "NEWSLETTER_SECRET is 3 characters" in r.output, r.output
    monkeypatch.delenv("NEWSLETTER_SECRET")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    secret = nl / ".newsletter" / "secret"
    assert len(secret.read_bytes().strip()) >= 32 and secret.stat().st_mode & 0o077 == 0


# --- 7. a symlinked build/<slug> is refused by compose and report; 9. --out under a file -----------

def test_compose_refuses_a_symlinked_build_folder(nl, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (nl / "build").mkdir()
    (nl / "build" / "mini").symlink_to(victim)
    r = runner.invoke(app, ["compose", "issues/mini.yaml"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert list(victim.iterdir()) == []


def test_report_refuses_a_symlinked_build_folder_and_an_out_under_a_file(nl, tmp_path):
    write_csv(nl / "list.csv", ["email", "name"], [["ok@example.org", "Olive"]])
    assert runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"]).exit_code == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (nl / "build").mkdir()
    (nl / "build" / "mini").symlink_to(victim)
    r = runner.invoke(app, ["report", "issues/mini.yaml"])
    assert r.exit_code == 2 and "link" in r.output, r.output
    assert list(victim.iterdir()) == []
    (nl / "afile").write_text("x", encoding="utf-8")
    r = runner.invoke(app, ["report", "issues/mini.yaml", "--out", "afile/x.html"])
    assert r.exit_code == 2 and "cannot write the report" in r.output and "Traceback" not in r.output, r.output
    assert (nl / "afile").read_text(encoding="utf-8") == "x"


# --- 10. a trickled request body is cut off; python-multipart does not log body bytes -------------

def test_a_body_that_never_finishes_is_refused_with_408():
    import asyncio

    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from newsletter_mailer.web.pages import body

    async def trickle() -> dict:
        if not hasattr(trickle, "sent"):
            trickle.sent = True
            return {"type": "http.request", "body": b"e", "more_body": True}
        await asyncio.Event().wait()  # the rest never comes

    scope = {"type": "http", "method": "POST", "path": "/subscribe", "headers": [], "query_string": b""}
    with pytest.raises(HTTPException) as caught:
        asyncio.run(body(Request(scope, trickle), seconds=0.05))
    assert caught.value.status_code == 408


def test_python_multipart_logs_nothing_of_a_malformed_body(caplog):
    import logging

    from python_multipart.multipart import MultipartParseError, MultipartParser

    from newsletter_mailer.web.pages import redact_access_log

    redact_access_log()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(MultipartParseError):
            MultipartParser(b"abc").write(b"--abe SECRET-BODY-BYTES")
    assert "SECRET" not in caplog.text and "Expected boundary" not in caplog.text


# --- 11. a CSV value that would decide a link's scheme must be a link itself ----------------------

SITE = '{{ site | default("https://example.org/x") }}'
LINK_ISSUE = f"""\
subject: Hello
date: 2020-09-01
sections:
  - heading: First
    body: Some text, and [more](https://example.org/more?s={{{{ site }}}}).
    image:
      src: https://example.org/a.png
      alt: an image
      href: '{SITE}'
    button:
      label: Go
      url: '{SITE}'
    links:
      - label: Read
        text: The briefing
        url: '{SITE}'
"""
UNSAFE_LINKS = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "  javascript:alert(1)", "\x01javascript:alert(1)",
                "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "vbscript:msgbox(1)",
                "//evil.example/x", "https://", "https://ok.example/ x"]


@pytest.mark.parametrize("value", UNSAFE_LINKS)
def test_link_problem_refuses_every_non_link(value):
    from newsletter_mailer.validators import link_problem

    assert link_problem(value) is not None
    assert link_problem("https://ok.example/a?b=c") is None and link_problem("mailto:a@example.org") is None


def test_compose_marks_only_the_fields_that_decide_a_link(nl):
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    (nl / "issues" / "links.yaml").write_text(LINK_ISSUE, encoding="utf-8")
    settings, folder = load_settings(None)
    c = compose(nl / "issues" / "links.yaml", settings, folder)
    marked = {(f.name, f.default) for f in c.fields if f.url}
    assert marked == {("site", "https://example.org/x")}  # not {{ site }} after https://…? in the body
    assert ("site", None) in {(f.name, f.default) for f in c.fields}


def test_the_field_that_starts_a_link_is_marked_and_its_value_judged():
    from newsletter_mailer.mergefields import FieldTable
    from newsletter_mailer.personalise import Filler
    from newsletter_mailer.render import _tokenize_markdown

    table = FieldTable()
    table.tokenize_url(" {{ a }}/x")
    table.tokenize_url("http{{ b }}{{ a }}")  # b decides; a follows it
    # In Markdown the rendered links are judged: after a literal scheme nothing is marked.
    _tokenize_markdown(table, "[ok](mailto:{{ c }}) ![i](https://example.org/{{ d }}.png)")
    assert [(f.name, f.url) for f in table.fields] == [("a", True), ("b", True), ("c", False), ("d", False)]
    filler = Filler(table.fields, "https://example.org/web")
    values = filler.values("r@example.org", "R", {"a": "javascript:alert(1)", "b": "s://ok", "c": "x", "d": "y"}, "")
    assert values == ["", "", "x", "y"]  # no default: never the reader's value …
    assert filler.unsafe_link(values) == "a"  # … and the plan skips that reader


def test_unsafe_link_values_get_the_default_in_the_outbox(nl):
    (nl / "issues" / "links.yaml").write_text(LINK_ISSUE, encoding="utf-8")
    rows = [[f"j{i}@example.org", "J", v] for i, v in enumerate(UNSAFE_LINKS)]
    write_csv(nl / "list.csv", ["email", "name", "site"], rows + [["ok@example.org", "Olive", "https://ok.example/o"]])
    assert runner.invoke(app, ["check", "issues/links.yaml"]).exit_code == 0
    r = runner.invoke(app, ["send", "issues/links.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    assert f"sent: {len(UNSAFE_LINKS) + 1}, failed: 0" in r.output, r.output
    msgs = outbox(nl, "links")
    for i in range(len(UNSAFE_LINKS)):
        html = msgs[f"j{i}@example.org"].get_body(("html",)).get_content()
        assert html.count('href="https://example.org/x"') == 3, html  # image, button, link
        hrefs = re.findall(r'(?:href|src)="([^"]*)"', html)
        assert hrefs and all(h.startswith(("https://", "mailto:")) for h in hrefs), hrefs
        # in the body's link the value stands after https://…?s=, where it cannot change the scheme
        assert any(h.startswith("https://example.org/more?s=") for h in hrefs), hrefs
    ok = msgs["ok@example.org"].get_body(("html",)).get_content()
    assert ok.count('href="https://ok.example/o"') == 3 and 'href="https://example.org/x"' not in ok


def test_unsafe_link_values_never_reach_sendgrids_substitutions(nl, tmp_path, monkeypatch):
    issue = LINK_ISSUE.replace("?s={{ site }}", "")  # {{ site }} only where it decides a link
    (nl / "issues" / "links.yaml").write_text(issue, encoding="utf-8")
    write_csv(nl / "list.csv", ["email", "name", "site"],
              [["j@example.org", "J", "javascript:alert(1)"], ["d@example.org", "D", "//evil.example"],
               ["ok@example.org", "Olive", "https://ok.example/o"]])
    with SendGridSink(tmp_path / "sg.log", API_KEY) as sink:
        monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sink.url)
        r = runner.invoke(app, ["send", "issues/links.yaml", "--list", "list.csv", "--provider", "sendgrid",
                                "--no-sync", "--yes"])
    assert r.exit_code == 0, r.output
    [request] = sink.requests
    subs = {p["to"][0]["email"]: set(p["substitutions"].values()) for p in request["body"]["personalizations"]}
    assert set(subs) == {"j@example.org", "d@example.org", "ok@example.org"}
    for who in ("j@example.org", "d@example.org"):
        assert "https://example.org/x" in subs[who]
        assert not any("javascript" in v or "evil.example" in v for v in subs[who]), subs[who]
    assert "https://ok.example/o" in subs["ok@example.org"]


def test_a_link_field_without_a_default_skips_the_reader_at_plan_time(nl, capsys):
    # The content check gives every field that starts a link a default; should one ever lack it,
    # its reader is counted and skipped with the CSV line before anything is sent.
    import dataclasses

    from newsletter_mailer.cli.send import _echo_plan
    from newsletter_mailer.send import Options, Sender, prepare

    (nl / "issues" / "links.yaml").write_text(LINK_ISSUE, encoding="utf-8")
    write_csv(nl / "list.csv", ["email", "name", "site"],
              [["j@example.org", "J", "javascript:alert(1)"], ["ok@example.org", "Olive", "https://ok.example/o"]])
    p = prepare(Options(issue=Path("issues/links.yaml"), list_path=Path("list.csv")))
    p.composed = dataclasses.replace(p.composed, fields=tuple(
        dataclasses.replace(f, default=None) if f.url else f for f in p.composed.fields))
    sender = Sender(p)
    try:
        plan = sender.plan()
        _echo_plan(p, plan)
        summary = sender.run(plan)
    finally:
        sender.close()
    assert plan.to_send == 1 and summary.sent == 1
    assert "  unsafe link value in column site: 1 (line 2)" in capsys.readouterr().out
    assert set(outbox(nl, "links")) == {"ok@example.org"}
