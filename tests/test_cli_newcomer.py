"""Issue #20's rough edges, as a newcomer met them: one-line usage errors, help and --version,
exit codes that agree, the settings found and described, and plain words for bad input."""

from __future__ import annotations

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
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-secret-value")
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
