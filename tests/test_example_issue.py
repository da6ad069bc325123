"""The example issue shows the main job's personalisation: each reader is greeted by name."""

from __future__ import annotations

import csv
import email
import email.policy
import shutil
from pathlib import Path

import lxml.html
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_LIST, EXAMPLE_SETTINGS, ROOT

runner = CliRunner()


def test_the_readme_send_greets_each_subscriber_by_name(tmp_path: Path, monkeypatch):
    """`newsletter send issues/2020-09-cscp.yaml --list subscribers.csv.example --yes --outbox DIR`."""
    for p in (EXAMPLE_SETTINGS, EXAMPLE_LIST):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "issues").mkdir()
    shutil.copy(EXAMPLE_ISSUE, tmp_path / "issues" / EXAMPLE_ISSUE.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "test-secret-value")
    outbox = tmp_path / "x"
    r = runner.invoke(app, ["send", "issues/2020-09-cscp.yaml", "--list", "subscribers.csv.example", "--yes",
                            "--outbox", str(outbox)])
    assert r.exit_code == 0, r.output
    with open(EXAMPLE_LIST, encoding="utf-8", newline="") as f:
        names: dict[str, str] = {}
        for row in csv.DictReader(f):  # the first row of an address wins, as in a send
            names.setdefault(row["Email"].lower(), row["Name"].strip())
    greeted = {}
    for path in (outbox / "2020-09-cscp").glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        to = msg["To"].addresses[0].addr_spec.lower()
        text = msg.get_body(("plain",)).get_content()
        html = lxml.html.fromstring(msg.get_body(("html",)).get_content()).text_content()
        expected = f"Dear {names[to] or 'colleague'},"
        assert expected in text and expected in html, (to, text[:300])
        greeted[to] = expected
    assert len(greeted) == 7
    assert greeted["alice@example.org"] == "Dear Alice Brown,"
    assert greeted["chloe.dubois@example.org"] == "Dear Chloé Dubois,"
    assert greeted["erin.hughes@example.com"] == "Dear colleague,"  # no name: the default


def test_the_readme_and_docs_send_the_list_a_fresh_clone_has():
    """Each example command that names a list file names one the repository ships (the README
    tour's first-issue sends use the subscribers.csv `newsletter init` writes: tests/test_docs.py)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))))
    listed = [line.split("--list", 1)[1].split()[0] for line in text.splitlines()
              if "newsletter send" in line and "--list" in line and "first-issue" not in line]
    files = [name for name in listed if "." in name]  # not placeholders such as CSV
    assert files
    for name in files:
        assert (ROOT / name).is_file(), name
