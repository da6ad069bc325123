"""What a new user met in the CLI (issue 10): every problem on request, --config everywhere,
a mistyped issue name, where test-send put the file, readable --help, and files the send
writes (outbox, ledger, lock) never written through a planted link."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_LIST, EXAMPLE_SETTINGS, MINI_ISSUE, with_custom_unsubscribe

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def nl(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    shutil.copy(EXAMPLE_LIST, tmp_path / "subscribers.csv")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    return tmp_path


def _two_problems(nl: Path) -> Path:
    path = nl / "issues" / "mini.yaml"
    path.write_text(MINI_ISSUE.replace("date: 2020-09-01", "date: 2020-13-01")
                    .replace("  - heading: Second", "  - heading: ''"), encoding="utf-8")
    return path


def test_one_line_names_how_many_more_problems_there_are(nl):
    r = run("check", _two_problems(nl), "--config", nl / "newsletter.toml")
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 1
    assert "(+1 more problem: --verbose lists them)" in lines[0]


def test_verbose_lists_every_problem_each_on_its_own_line(nl):
    path = _two_problems(nl)
    r = run("--verbose", "check", path, "--config", nl / "newsletter.toml")
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 2, r.stderr
    assert all(line.startswith(f"error: {path}:") for line in lines)
    assert any("date" in line for line in lines) and any("sections[1].heading" in line for line in lines)
    # the flag does not stick to the next run in the same process
    assert len(run("check", path, "--config", nl / "newsletter.toml").stderr.splitlines()) == 1


def test_verbose_after_the_command_lists_every_problem_without_the_count(nl):
    path = _two_problems(nl)
    for flag in ("--verbose", "-v"):
        r = run("check", path, "--config", nl / "newsletter.toml", flag)
        lines = r.stderr.splitlines()
        assert r.exit_code == 2 and len(lines) == 2, r.output
        assert "more problem" not in r.stderr
    assert "more problem" not in run("--verbose", "check", path, "--config", nl / "newsletter.toml").stderr
    for command in (["send"], ["audience", "list"], ["state", "init"], ["serve"], ["inbox"]):
        assert "--verbose" in run(*command, "--help").stdout


def test_schema_takes_config_like_every_command(nl, tmp_path):
    r = run("schema", "--config", nl / "newsletter.toml")
    assert r.exit_code == 0 and '"sections"' in r.stdout
    r = run("schema", "--config", tmp_path / "nope.toml")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "nope.toml" in r.stderr


def test_schema_out_replaces_a_planted_link_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "schema.json").symlink_to(target)
    r = run("schema", "--out", tmp_path / "schema.json")
    assert r.exit_code == 0, r.stderr
    assert target.read_text() == "keep me"
    assert not (tmp_path / "schema.json").is_symlink() and '"sections"' in (tmp_path / "schema.json").read_text()


def test_status_of_a_mistyped_issue_is_file_not_found(nl):
    r = run("status", nl / "issues" / "nope.yaml", "--config", nl / "newsletter.toml")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [f"error: {nl / 'issues' / 'nope.yaml'}: file not found (check the path)"]


def test_test_send_to_the_outbox_says_where_the_file_went(nl, tmp_path):
    out = tmp_path / "box"
    r = run("test-send", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml", "--outbox", out,
            "--to", "me@example.org", "--state", tmp_path / "state")
    assert r.exit_code == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("sent [TEST] to me@example.org"))
    written = line.rsplit("(written to ", 1)[1].rstrip(")")
    assert Path(written).is_file() and Path(written).parent == out / "mini" / "test"


def test_send_help_names_its_arguments_plainly():
    r = runner.invoke(app, ["send", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "--list CSV" in r.stdout and "--suppress FILE" in r.stdout and "--state DIR" in r.stdout
    assert "list[Path]" not in r.stdout and "--list <path>" not in r.stdout


def _send(nl: Path, tmp_path: Path, *extra):
    return run("send", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml", "--list",
               nl / "subscribers.csv", "--outbox", tmp_path / "box", "--state", tmp_path / "state", "--yes",
               *extra)


def test_outbox_messages_are_private_and_never_written_through_a_link(nl, tmp_path, monkeypatch):
    from newsletter_mailer.providers.outbox import filename

    monkeypatch.setattr(os, "umask", os.umask)  # restored by monkeypatch
    os.umask(0)
    folder = tmp_path / "box" / "mini"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    first = "alice@example.org"
    (folder / filename(first)).symlink_to(victim)  # planted where the first message goes
    (folder / (filename(first) + ".tmp")).symlink_to(victim)  # and at the old temporary name
    r = _send(nl, tmp_path)
    assert r.exit_code == 0, r.stderr
    assert victim.read_text() == "untouched"
    emls = list(folder.glob("*.eml"))
    assert emls and all(not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) == 0o600 for p in emls)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["ledger.sqlite3", "mini.lock"])
def test_a_link_planted_in_the_state_folder_is_refused(nl, tmp_path, name):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("")
    (state / name).symlink_to(victim)
    r = _send(nl, tmp_path)
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1 and "link" in r.stderr, r.stderr
    assert victim.read_text() == "" and not list((tmp_path / "box").glob("**/*.eml"))


def test_spaced_placeholders_in_unsubscribe_url_are_filled_in_every_message(nl, tmp_path):
    toml = nl / "newsletter.toml"
    text = toml.read_text()
    import re
    text = with_custom_unsubscribe(text, 'unsubscribe_url = "https://example.org/u?e={{  email  }}&t={{token }}"')
    toml.write_text(text)
    r = _send(nl, tmp_path)
    assert r.exit_code == 0, r.stderr
    for eml in (tmp_path / "box" / "mini").glob("*.eml"):
        raw = eml.read_bytes()
        assert b"{{" not in raw.split(b"\r\n\r\n", 1)[0] and b"List-Unsubscribe: <https://example.org/u?e=" in raw
