"""`newsletter audience …` and `newsletter serve` through the CLI (typer's runner and real processes)."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.cli import app
from tests.helpers.webserver import ROOT, SECRET, free_port
from newsletter_mailer.state import State

runner = CliRunner()


@pytest.fixture
def nl(tmp_path):
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    return tmp_path


def cli(nl, *args: str):
    return runner.invoke(app, [*args, "--config", str(nl / "newsletter.toml"), "--state", str(nl / "state")])


def store(nl) -> Audience:
    return State(nl / "state").audience()


def test_suppress_list_unsuppress(nl):
    r = cli(nl, "audience", "suppress", "Ann@Example.org", "bob@example.org", "--reason", "asked by phone")
    assert r.exit_code == 0 and "suppressed 2 addresses" in r.output
    s = store(nl)
    assert s.status("ann@example.org").status == "unsubscribed" and s.status("ann@example.org").source == "cli"
    s.close()
    r = cli(nl, "audience", "list", "--status", "unsubscribed")
    assert r.output.splitlines() == ["ann@example.org", "bob@example.org"]
    r = cli(nl, "audience", "list", "--format", "csv")
    rows = list(csv.reader(r.output.splitlines()))
    assert rows[0][:3] == ["email", "status", "source"] and rows[1][:5] == [
        "ann@example.org", "unsubscribed", "cli", "", "asked by phone"]
    r = cli(nl, "audience", "unsuppress", "ann@example.org")
    assert r.exit_code == 0 and "unsuppressed 1 address" in r.output
    assert cli(nl, "audience", "list").output.splitlines() == ["bob@example.org"]
    r = cli(nl, "audience", "unsuppress", "ann@example.org")
    assert r.exit_code == 0 and r.output.splitlines() == ["nothing unsuppressed; 1 was not suppressed"]


@pytest.mark.parametrize("args", [("audience", "suppress", "ok@example.org", "not-an-address"),
                                  ("audience", "unsuppress", "two@@example.org")])
def test_an_invalid_address_is_one_line_and_exit_2(nl, args):
    r = cli(nl, *args)
    assert r.exit_code == 2
    assert "is not a valid email address" in r.output and "ADDR" in r.output
    assert "Traceback" not in r.output
    s = store(nl)
    assert list(s.rows()) == []
    s.close()


def test_bad_status_and_format_are_refused(nl):
    assert cli(nl, "audience", "list", "--status", "gone").exit_code == 2
    assert cli(nl, "audience", "list", "--format", "xml").exit_code == 2


def test_import_reports_recorded_and_skipped_lines_sanitised(nl):
    export = nl / "listmonk.csv"
    export.write_text("email,name,status\nann@example.org,Ann,enabled\nbob@example.org,Bob,blocklisted\n"
                      "\"bad\x1b[31m\",X,enabled\ncarl@example.org,Carl,disabled\n")
    r = cli(nl, "audience", "import", str(export))
    assert r.exit_code == 0, r.output
    assert "read 4 row(s): changed 2 (subscribed 1, unsubscribed 1), skipped 2" in r.output
    assert "skipped line 4: not a valid address" in r.output and "skipped line 5: status not imported" in r.output
    assert "\x1b" not in r.output


def test_import_refuses_a_plain_list_and_names_the_columns_it_expected(nl):
    plain = nl / "plain.csv"
    plain.write_text("email,name\nann@example.org,Ann\n")
    r = cli(nl, "audience", "import", str(plain))
    assert r.exit_code == 2
    [line] = r.stderr.splitlines()
    assert "not an export this can read: its columns are email, name" in line
    assert "listmonk's email and status columns, Mailchimp's Email Address" in line and "--status" in line
    s = store(nl)
    assert list(s.rows()) == []  # nothing recorded, nobody mailed as a sign-up
    s.close()
    r = cli(nl, "audience", "import", str(plain), "--status", "unsubscribed")
    assert r.exit_code == 0, r.output
    s = store(nl)
    assert [(e.email, e.status) for e in s.rows()] == [("ann@example.org", "unsubscribed")]
    s.close()
    assert cli(nl, "audience", "import", str(plain), "--status", "gone").exit_code == 2
    listmonk = nl / "listmonk.csv"
    listmonk.write_text("email,name,status\nann@example.org,Ann,enabled\n")
    r = cli(nl, "audience", "import", str(listmonk), "--status", "subscribed")
    assert r.exit_code == 2 and "--status is for a plain list" in r.stderr


def test_import_summary_counts_what_changed_not_rows_read(nl):
    s = store(nl)
    s.record([Change(f"gone{i}@example.org", "unsubscribed", "link") for i in range(3)])
    s.close()
    own = nl / "subscribers.csv"
    own.write_text("email,name,status\n" + "".join(f"gone{i}@example.org,G,subscribed\n" for i in range(3))
                   + "new@example.org,New,subscribed\n")
    r = cli(nl, "audience", "import", str(own))
    assert r.exit_code == 0, r.output
    assert ("read 4 row(s): changed 1 (subscribed 1), unchanged 3 (already so, or a stronger status such as "
            "unsubscribed stands)") in r.output
    s = store(nl)
    assert {e.email: e.status for e in s.rows()}["gone0@example.org"] == "unsubscribed"
    s.close()


def test_export_merges_the_list_with_the_store(nl):
    s = store(nl)
    s.record([Change("new@example.org", "subscribed", "form", name="New Reader"),
              Change("ann@example.org", "unsubscribed", "one-click"),
              Change("cat@example.org", "complained", "sendgrid")])
    s.close()
    lst = nl / "subscribers.csv"
    lst.write_text("email,name,school\nann@example.org,Ann,North\nbob@example.org,Bob,South\ncat@example.org,Cat,\n")
    out = nl / "export.csv"
    r = cli(nl, "audience", "export", str(out), "--list", str(lst))
    assert r.exit_code == 0, r.output
    assert (out.stat().st_mode & 0o777) == 0o600
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows == [["email", "name", "school", "status"], ["ann@example.org", "Ann", "North", "unsubscribed"],
                    ["bob@example.org", "Bob", "South", ""], ["cat@example.org", "Cat", "", "unsubscribed"],
                    ["new@example.org", "New Reader", "", "subscribed"]]
    r = cli(nl, "audience", "export", str(out), "--list", str(lst))
    assert r.exit_code == 2 and "--force" in r.output
    link = nl / "link.csv"
    link.symlink_to(nl / "elsewhere.csv")
    assert cli(nl, "audience", "export", str(link), "--force").exit_code == 2
    assert not (nl / "elsewhere.csv").exists()
    assert cli(nl, "audience", "export", str(out), "--force").exit_code == 0


def _serve(nl, port: int, **env) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **env)
    return subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "serve", "--port", str(port),
                             "--config", str(nl / "newsletter.toml"), "--state", str(nl / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def test_serve_refuses_a_port_in_use_and_a_missing_secret(nl):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _serve(nl, taken.getsockname()[1], NEWSLETTER_SECRET=SECRET)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "cannot listen on 127.0.0.1" in err and "--port" in err and "Traceback" not in err
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_SECRET"}
    proc = subprocess.run([sys.executable, "-m", "newsletter_mailer", "serve", "--config",
                           str(nl / "newsletter.toml"), "--state", str(nl / "state")],
                          capture_output=True, text=True, env=dict(env, PYTHONPATH=str(ROOT / "src")), timeout=60)
    assert proc.returncode == 2 and "no newsletter secret" in proc.stderr and "NEWSLETTER_SECRET" in proc.stderr


def test_serve_says_where_it_listens_and_answers(nl):
    port = free_port()
    proc = _serve(nl, port, NEWSLETTER_SECRET=SECRET)
    try:
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.readline()
        assert "web.base_url is not set" in proc.stdout.readline()
        for _ in range(200):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert r.status_code == 200 and "Subscribe to CSCP Newsletter" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_on_every_interface_and_a_placeholder_base_url_are_warned_about(nl):
    with open(nl / "newsletter.toml", "a", encoding="utf-8") as f:
        f.write('\n[web]\nbase_url = "https://news.example.com"\n')
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NEWSLETTER_SECRET=SECRET)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "serve", "--host", "0.0.0.0", "--port",
                             str(port), "--config", str(nl / "newsletter.toml"), "--state", str(nl / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"listening on http://0.0.0.0:{port}" in lines[0]
    assert "links in emails point to https://news.example.com/…" in lines[1]
    assert "warning: listening on 0.0.0.0: reachable from other machines" in lines[2] and "TLS" in lines[2]
    assert "warning: web.base_url is on news.example.com, a placeholder domain" in lines[3]
