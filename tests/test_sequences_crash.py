"""Sequences under SIGKILL and beside each other: `newsletter sequences run` killed mid-run and
run again sends nothing twice (SMTP through aiosmtpd); runners started together send each step
to each reader once (PostgreSQL: the advisory lock; SQLite: the flock)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from newsletter_mailer.state.handle import State
from tests.helpers.sinks import SinkProcess, read_smtp_log, wait_until
from tests.test_sequences import SECRET, enrol, newsletter, received


def env_for(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "SENDGRID_", "NEWSLETTER_"))}
    env.update(NEWSLETTER_SECRET=SECRET, NEWSLETTER_BACKOFF_BASE="0.01", PYTHONUNBUFFERED="1", **extra)
    if database_url:
        env["NEWSLETTER_DATABASE_URL"] = database_url
    return env


def run_cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "sequences", "run", *args], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def readers(n: int) -> list[str]:
    return [f"reader{i:04d}@example.org" for i in range(n)]


def test_sigkill_mid_run_then_a_rerun_sends_nothing_twice(tmp_path, database_url):
    folder = newsletter(tmp_path / "nl")
    everyone = readers(200)
    enrol(folder, database_url, everyone, int(time.time()) - 60, state=".newsletter")
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log, "0.01") as port:  # each message a moment: the kill lands mid-run
        env = env_for(database_url, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none")
        proc = run_cli(folder, env, "--provider", "smtp")
        wait_until(lambda: len(read_smtp_log(log)) >= 40 or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()
        proc.kill()
        proc.communicate(timeout=30)
        killed_at = len(read_smtp_log(log))
        assert killed_at < len(everyone)
        again = run_cli(folder, env, "--provider", "smtp")
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out + err
        assert "Traceback" not in err and err == ""
        assert "1-hello:" in out and " sent" in out
        before = len(read_smtp_log(log))
        rerun = run_cli(folder, env, "--provider", "smtp")   # a minute later: nothing twice
        out2, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0 and ("nothing due" in out2 or "0 sent, 1 held back" in out2), out2
        assert len(read_smtp_log(log)) == before
    counts = Counter(to for to, _ in read_smtp_log(log))
    assert not {e: c for e, c in counts.items() if c > 1}, "a reader got step 1 twice"
    ledger = State(folder / ".newsletter", database_url).ledger()
    try:
        rows = {r.email: r.status for r in ledger.rows("sequence:welcome:1-hello")}
    finally:
        ledger.close()
    uncertain = {e for e, s in rows.items() if s == "uncertain"}
    assert set(everyone) - set(counts) <= uncertain            # none lost without a trace
    assert len(uncertain) <= 1                                 # SMTP: one message in flight
    status = subprocess.run([sys.executable, "-m", "newsletter_mailer", "sequences", "status"], cwd=folder,
                            env=env_for(database_url), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if "1-hello" in ln).split()
    assert int(line[4]) == len(uncertain) and int(line[2]) == len(everyone) - len(uncertain)  # uncertain, sent
    assert int(line[1]) == 0                                   # the uncertain one is held, not "due"


@pytest.mark.slow
def test_runners_started_together_send_each_step_once(tmp_path, database_url):
    folder = newsletter(tmp_path / "nl")
    everyone = readers(300)
    enrol(folder, database_url, everyone, int(time.time()) - 60, state=".newsletter")
    env = env_for(database_url)
    procs = [run_cli(folder, env) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all("Traceback" not in err for _, err in outs)
    got = received(folder)
    assert got == Counter({("1-hello", e): 1 for e in everyone})   # each reader, each step: once
    ledger = State(folder / ".newsletter", database_url).ledger()
    try:
        assert ledger.counts("sequence:welcome:1-hello")["sent"] == len(everyone)
    finally:
        ledger.close()


def test_sendgrid_steps_meet_the_contract(tmp_path):
    """A step through SendGrid's Mail Send, as Prism checks it against SendGrid's OpenAPI contract."""
    from tests.helpers.prism import prism_server
    from tests.test_sequences import T0, Clock, runner

    folder = newsletter(tmp_path / "nl")
    enrol(folder, None, ["a@example.org", "b@example.org", "c@example.org"], T0)
    with prism_server() as url:
        run = runner(folder, None, Clock(), provider="sendgrid")
        run.env = {**run.env, "SENDGRID_API_KEY": "SG.test", "SENDGRID_API_HOST": url}
        report = run.run()
    assert not report.errors, [e.format() for e in report.errors]
    assert [(s.step, s.sent) for s in report.steps] == [("1-hello", 3)]
    ledger = State(folder / "state").ledger()
    try:
        assert ledger.counts("sequence:welcome:1-hello")["sent"] == 3
    finally:
        ledger.close()
