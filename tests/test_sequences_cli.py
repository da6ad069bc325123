"""The sequence file and the commands around it: init writes one, check checks every step,
bad files are one line with file:line, audience import starts readers, audience list shows places."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_sequences import MINI_ISSUE, SECRET, newsletter


def nl_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "SENDGRID_", "NEWSLETTER_"))}
    env.update(NEWSLETTER_SECRET=SECRET, PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "newsletter_mailer", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def test_init_writes_a_welcome_sequence_that_checks_and_runs(tmp_path):
    folder = tmp_path / "news"
    assert nl_cli(tmp_path, "init", "news").returncode == 0
    assert (folder / "sequences" / "welcome.yaml").is_file()
    checked = nl_cli(folder, "check", "sequences/welcome.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "sequences/welcome/1-hello.yaml:" in checked.stdout and "1 step(s), start: confirmed: ok" in checked.stdout
    assert nl_cli(folder, "sequences", "start", "welcome", "ann@example.org").returncode == 0
    ran = nl_cli(folder, "sequences", "run")
    assert ran.returncode == 0 and "welcome / 1-hello: 1 sent" in ran.stdout, ran.stdout + ran.stderr
    assert len(list((folder / "outbox" / "1-hello").glob("*.eml"))) == 1
    assert "nothing due" in nl_cli(folder, "sequences", "run").stdout
    status = nl_cli(folder, "sequences", "status", "welcome")
    assert status.returncode == 0 and status.stdout.splitlines()[2].split()[:3] == ["1-hello", "0", "1"]


@pytest.mark.parametrize("text, where, words", [
    ("start: confirmd\nsteps:\n  - issue: sequences/welcome/1-hello.yaml\n", ":1", "start"),
    ("start: confirmed\nsteps:\n  - issue: sequences/welcome/1-hello.yaml\n    after: 3 days\n", ":4",
     "duration"),
    ("start: confirmed\nsteps:\n  - issue: sequences/welcome/nope.yaml\n", ":3", "is not a file"),
    ("start: confirmed\nsteps:\n  - issue: sequences/welcome/1-hello.yaml\n    for: {tags: [x]}\n", ":4",
     "needs the audiences feature"),
    ("start: confirmed\nsteps:\n  - issue: sequences/welcome/2-how-to-help.yaml\n    after: 3d\n"
     "  - issue: sequences/welcome/1-hello.yaml\n", ":5", "earlier than the step before"),
    ("start: confirmed\nsteps:\n  - issue: sequences/welcome/1-hello.yaml\n"
     "  - issue: sequences/welcome/1-hello.yaml\n", ":4", "already step 1"),
    ("start: confirmed\nstepz: []\n", ":2", "stepz"),
])
def test_a_bad_sequence_file_is_one_line_with_its_line(tmp_path, text, where, words):
    folder = newsletter(tmp_path / "nl")
    (folder / "sequences" / "welcome.yaml").write_text(text, encoding="utf-8")
    for args in (("check", "sequences/welcome.yaml"), ("sequences", "run"), ("sequences", "status")):
        result = nl_cli(folder, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert f"sequences/welcome.yaml{where}" in line and words in line, line
        assert "Traceback" not in result.stderr


def test_check_fails_for_a_step_with_a_merge_field_readers_cannot_fill(tmp_path):
    folder = newsletter(tmp_path / "nl")
    (folder / "sequences" / "welcome" / "3-training.yaml").write_text(
        MINI_ISSUE.replace('{{ school_year | default("all years") }}', "{{ school_year }}"), encoding="utf-8")
    result = nl_cli(folder, "check", "sequences/welcome.yaml")
    assert result.returncode == 1 and "ERROR merge field {{ school_year }} has no default" in result.stdout
    assert "1 check(s) failed in its steps" in result.stderr


def test_audience_import_starts_the_subscribed_readers_and_list_shows_their_place(tmp_path):
    folder = newsletter(tmp_path / "nl", start="imported")
    (folder / "export.csv").write_text("email,name,status\nann@example.org,Ann,subscribed\n"
                                       "bob@example.org,Bob,unsubscribed\nnot an address,X,subscribed\n"
                                       "cy@example.org,Cy,subscribed\n", encoding="utf-8")
    result = nl_cli(folder, "audience", "import", "export.csv", "--start-sequence", "welcome")
    assert result.returncode == 0 and "started 2 reader(s) in the sequence welcome" in result.stdout, result
    assert nl_cli(folder, "sequences", "run").returncode == 0
    listed = list(csv.DictReader(io.StringIO(nl_cli(folder, "audience", "list", "--format", "csv").stdout)))
    assert {r["email"]: r["sequences"] for r in listed} == {
        "ann@example.org": "welcome: 1-hello", "bob@example.org": "", "cy@example.org": "welcome: 1-hello"}


def test_start_sequence_needs_a_sequence_that_starts_on_import(tmp_path):
    folder = newsletter(tmp_path / "nl")   # start: confirmed
    (folder / "export.csv").write_text("email,status\nann@example.org,subscribed\n", encoding="utf-8")
    result = nl_cli(folder, "audience", "import", "export.csv", "--start-sequence", "welcome")
    assert result.returncode == 2 and "has start: confirmed, not imported" in result.stderr
    assert nl_cli(folder, "audience", "list").stdout == ""     # nothing imported
    missing = nl_cli(folder, "audience", "import", "export.csv", "--start-sequence", "nope")
    assert missing.returncode == 2 and "no sequence 'nope'" in missing.stderr
