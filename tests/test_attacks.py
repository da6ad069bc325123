"""Findings of an attacker's review, each reproduced here before its fix: the test fails on the old code."""

from __future__ import annotations

import csv
import email
import email.policy
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.message import HeaderValueError, header_value
from newsletter_mailer.validators import header_problem
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
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
    folder = tmp_path / "nl"
    (folder / "issues").mkdir(parents=True)
    shutil.copy(EXAMPLE_SETTINGS, folder / "newsletter.toml")
    (folder / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    monkeypatch.chdir(folder)
    for var in ("SMTP_HOST", "SMTP_PORT", "SMTP_PASSWORD", "SENDGRID_API_KEY", "SENDGRID_API_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET", "attack-test-secret-0123456789abcdef")
    monkeypatch.setenv("NEWSLETTER_BACKOFF_BASE", "0.005")
    return folder


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
    toml = toml.replace('unsubscribe_url = "https://example.org/unsubscribe?',
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
    (nl / "newsletter.toml").write_text(toml.replace("[brand]", '[web]\nbase_url = "https://bücher.example/ü"\n\n[brand]'),
                                        encoding="utf-8")
    settings, _ = load_settings(nl / "newsletter.toml")
    assert settings.web.base_url == "https://xn--bcher-kva.example/%C3%BC"
    (nl / "newsletter.toml").write_text(toml.replace("[brand]", '[web]\nbase_url = "https://a..ü/"\n\n[brand]'),
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
