"""One slug rule for every command: the issue's file name names folders, a web address and a header,
so a name that is not safe in all three is one clean error (exit 2) before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError, one_line
from newsletter_mailer.schema import SLUG_MAX, slug_of
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from newsletter_mailer.state import State

runner = CliRunner()

BAD_NAMES = {
    "dots": "...yaml",  # slug "..": compose wrote to build/../, send into the project root
    "line-break": "a\nb.yaml",
    "encoded-word": "=?utf-8?q?=0D=0A?=.yaml",  # would be decoded into a CR/LF by the email package
    "too-long": "a" * (SLUG_MAX + 1) + ".yaml",
}


@pytest.mark.parametrize("stem", ["2020-09-cscp", "mini", "a.b_c-1", "A", "9" * SLUG_MAX])
def test_a_plain_file_name_is_the_slug(stem):
    assert slug_of(Path("issues") / f"{stem}.yaml") == stem


@pytest.mark.parametrize("stem", ["..", ".", "a..b", ".hidden", "-x", "_x", "a b", "caf\u00e9", "a\x7fb",
                                  "a\tb", "a\nb", "a%2Fb", "a?b", "a=b", "a:b", "a" * (SLUG_MAX + 1)])
def test_an_unsafe_file_name_is_refused_naming_the_file_and_saying_how_to_rename_it(stem):
    path = Path("issues") / f"{stem}.yaml"
    with pytest.raises(NewsletterError) as info:
        slug_of(path)
    line = info.value.format()
    assert "\n" not in line and "\r" not in line
    assert "rename the file" in line and "letters, digits" in line
    assert line.startswith("issues/")


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "subscribers.csv").write_text("email,name\nann@example.org,Ann\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


COMMANDS = {
    "compose": ["compose", "{issue}"],
    "compose-watch": ["compose", "{issue}", "--watch", "--port", "0"],
    "check": ["check", "{issue}"],
    "send-dry-run": ["send", "{issue}", "--list", "subscribers.csv", "--provider", "outbox", "--dry-run"],
    "status": ["status", "{issue}"],
    "status-with-ledger": ["status", "{issue}"],
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_unsafe_issue_file_name_before_writing_anything(project, command, name):
    issue = project / "issues" / name
    issue.write_text(MINI_ISSUE, encoding="utf-8")
    if command == "status-with-ledger":
        (project / ".newsletter").mkdir()
        State(project / ".newsletter").ledger().close()
    before = _tree(project)
    result = runner.invoke(app, [a.replace("{issue}", f"issues/{name}") for a in COMMANDS[command]])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: issues/{one_line(name)}: ") and "rename the file" in lines[0], lines
    assert "internal error" not in lines[0]
    assert result.stdout == ""
    assert _tree(project) == before  # no build/, outbox/, ledger or secret: nothing written anywhere


@pytest.mark.parametrize("name", [n for n in BAD_NAMES.values() if not n.startswith(".")])
def test_publish_refuses_an_unsafe_issue_file_name_and_writes_no_site(project, name):
    (project / "issues" / "good.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    (project / "issues" / name).write_text(MINI_ISSUE, encoding="utf-8")
    result = runner.invoke(app, ["publish", "--out", "site"])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "rename the file" in lines[0], lines
    assert f"issues/{one_line(name)}: " in lines[0]  # the file named, a line break shown as \\n
    assert not (project / "site").exists()


def test_publish_leaves_out_a_hidden_file_such_as_dot_dot_dot_yaml(project):
    """Names starting with '.' are hidden (editor and macOS side files): never read, so never a slug."""
    (project / "issues" / "good.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    (project / "issues" / "...yaml").write_text(MINI_ISSUE, encoding="utf-8")
    result = runner.invoke(app, ["publish", "--out", "site"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in (project / "site").iterdir() if p.is_dir()) == ["good"]
    assert {p.name for p in project.iterdir()} == {"newsletter.toml", "issues", "subscribers.csv", "site"}
