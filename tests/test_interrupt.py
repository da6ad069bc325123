"""Ctrl-C (SIGINT) and SIGTERM during a send: one line (what went out, that anything in flight is
recorded as uncertain, the command to resume), exit 130/143, and a ledger that is still right.

The send runs as a subprocess against a slow SMTP server in a process of its own (its log is the
ground truth of what arrived); the printed resume command is then run as printed."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter_mailer.stopping import Interrupted, StopOnSignals
from tests.helpers.postgres import query
from tests.helpers.sinks import SinkProcess, read_smtp_log, wait_until
from tests.test_crash_safety import all_addresses, base_env, make_folder

N = 40


# -- the signal guard, in this process --------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_between_batches_stops_at_once(sig, code):
    reached = False
    with pytest.raises(Interrupted) as stopped, StopOnSignals():
        os.kill(os.getpid(), sig)
        time.sleep(5)  # interrupted long before: the handler raises
        reached = True
    assert not reached
    assert (stopped.value.exit_code, stopped.value.name) == (code, sig.name)


def test_a_signal_in_flight_waits_until_the_batch_is_recorded():
    recorded = []
    with pytest.raises(Interrupted) as stopped, StopOnSignals() as stop:
        for batch in range(3):
            with stop.in_flight():
                os.kill(os.getpid(), signal.SIGTERM)
                recorded.append(batch)  # the batch's outcome goes in the ledger first
    assert recorded == [0] and stopped.value.exit_code == 143


def test_a_second_signal_in_flight_stops_at_once():
    recorded = []
    with pytest.raises(Interrupted), StopOnSignals() as stop:
        with stop.in_flight():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # the server hangs: the user presses Ctrl-C again
            recorded.append("not reached")
    assert recorded == []


def test_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopOnSignals():
        assert signal.getsignal(signal.SIGTERM) != before[1]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# -- a real send, stopped ----------------------------------------------------------------------------

def _ledger(folder: Path, url: str | None) -> dict[str, int]:
    sql = "SELECT status, count(*) FROM deliveries GROUP BY status"
    if url is not None:
        return dict(query(url, sql))
    import sqlite3

    db = sqlite3.connect(folder / ".newsletter" / "ledger.sqlite3")
    try:
        return dict(db.execute(sql).fetchall())
    finally:
        db.close()


def _start(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "send", "issues/crash.yaml", "--list",
                             "subs.csv", "--provider", "smtp", "--yes"], cwd=folder, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_send_says_so_and_its_resume_command_completes_it(tmp_path, database_url, sig, code, connections):
    folder = make_folder(tmp_path, N)
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log, "0.05") as port:  # 50 ms a message: about 2 s for the list
        env = base_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none",
                       SMTP_CONNECTIONS=str(connections),
                       **({"NEWSLETTER_DATABASE_URL": database_url} if database_url else {}))
        proc = _start(folder, env)
        assert wait_until(lambda: len(read_smtp_log(log)) >= 5 or proc.poll() is not None, 60)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (out, err)
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1, err
        line = lines[0]
        arrived = read_smtp_log(log)
        # The messages in flight were finished and recorded: what the server has is what the ledger says.
        assert line.startswith(f"interrupted ({sig.name}): {len(arrived)} of {N} sent, 0 uncertain"), line
        assert "anything in flight is recorded as uncertain" in line
        assert "Traceback" not in out + err
        assert 5 <= len(arrived) < N
        assert _ledger(folder, database_url) == {"sent": len(arrived)}

        command = shlex.split(line.split("resume with: ", 1)[1])
        assert command[0] == "newsletter"
        again = subprocess.run([sys.executable, "-m", "newsletter_mailer", *command[1:]], cwd=folder, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{len(arrived)} already sent" in again.stdout

    delivered = [to for to, _ in read_smtp_log(log)]
    assert sorted(delivered) == sorted(all_addresses(N))  # everybody, exactly once
    assert _ledger(folder, database_url) == {"sent": N}


@pytest.mark.slow
@pytest.mark.parametrize("connections", [1, 4])
def test_a_second_ctrl_c_gives_up_on_a_hanging_server_and_records_it_uncertain(tmp_path, connections):
    folder = make_folder(tmp_path, 5)
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log, "2") as port:  # each message takes 2 s to be accepted
        env = base_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none",
                       SMTP_CONNECTIONS=str(connections))
        proc = _start(folder, env)
        assert wait_until(lambda: len(read_smtp_log(log)) >= 1 or proc.poll() is not None, 60)
        time.sleep(0.5)  # the second message is in the server's hands
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    [line] = [l for l in err.splitlines() if l.strip()]
    ledger = _ledger(folder, None)
    assert line.startswith(f"interrupted (SIGINT): {ledger['sent']} of 5 sent, {ledger.get('uncertain', 0)} uncertain")
    # one connection: the first sent, the second in flight; four: four sent, the fifth in flight
    assert ledger.get("uncertain", 0) + ledger["sent"] == min(5, connections + 1), (line, ledger)
    assert "sending" not in ledger and ledger.get("uncertain", 0) >= 1, (line, ledger)
