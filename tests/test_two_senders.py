"""Two `newsletter send` of the same issue at once (state/send_lock.py), on both backends.

Real processes against a real SMTP server in a process of its own (its log is the ground
truth), paced by delivery.rate so the sends overlap: exactly one sends, the other stops
naming the holder (exit 1) and sends nothing; a SIGKILLed holder frees the issue; two
different issues send side by side.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.sinks import SinkProcess, read_smtp_log, wait_until
from tests.test_crash_safety import SEED, all_addresses, base_env, make_folder

pytestmark = pytest.mark.slow

N = 40
RATE = 20  # messages a second: a send lasts about two seconds, long enough for the other to collide
ARGS = ["--list", "subs.csv", "--provider", "smtp", "--yes"]


def paced_folder(root: Path, n: int = N) -> Path:
    root.mkdir()
    folder = make_folder(root, n)
    toml = folder / "newsletter.toml"
    toml.write_text(toml.read_text().replace("[delivery]\n", f"[delivery]\nrate = {RATE}\n", 1))
    return folder


def start(folder: Path, env: dict[str, str], issue: str = "issues/crash.yaml") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "send", issue, *ARGS], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture
def fresh_url(backend, request):
    """A function giving a fresh initialised database URL per call (None for SQLite)."""
    if backend == "sqlite":
        return lambda: None
    from newsletter_mailer.state.migrations import init_database

    cluster = request.getfixturevalue("pg_cluster")

    def make() -> str:
        url = cluster.new_database()
        init_database(url)
        return url
    return make


def env_for(port: int, url: str | None) -> dict[str, str]:
    extra = {"NEWSLETTER_DATABASE_URL": url} if url else {}
    return base_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none", **extra)


def test_two_sends_of_one_issue_started_together_one_sends_the_other_names_the_holder(tmp_path, fresh_url):
    rng = random.Random(SEED)
    for run in range(5):
        folder = paced_folder(tmp_path / f"run{run}")
        log = tmp_path / f"smtp{run}.log"
        with SinkProcess("smtp", log) as port:
            env = env_for(port, fresh_url())
            first = start(folder, env)
            time.sleep(rng.uniform(0.0, 0.6))  # a different collision each run
            second = start(folder, env)
            results = [finish(first), finish(second)]
            received = Counter(to for to, _ in read_smtp_log(log))
        winners = [r for r in results if r[0] == 0]
        losers = [r for r in results if r[0] != 0]
        assert len(winners) == 1 and len(losers) == 1, (run, results)
        code, out, err = losers[0]
        assert code == 1 and "crash is being sent from " in err and " since 20" in err, (run, err)
        assert "(pid " in err and "nothing was sent by this command" in err
        assert "Traceback" not in err and "sent" not in out.replace("being sent", "")
        assert set(received) == all_addresses(N) and set(received.values()) == {1}, (run, received)


def test_a_sigkilled_holder_frees_the_issue_and_the_same_command_resumes(tmp_path, fresh_url):
    folder = paced_folder(tmp_path / "nl")
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log) as port:
        env = env_for(port, fresh_url())
        holder = start(folder, env)
        assert wait_until(lambda: len(read_smtp_log(log)) >= 5, timeout=60, poll=0.01)
        holder.kill()
        holder.wait(10)
        code, out, err = finish(start(folder, env))
        received = Counter(to for to, _ in read_smtp_log(log))
    assert code == 0, out + err
    assert "being sent from" not in err and "Traceback" not in err
    assert set(received.values()) == {1}, "nobody gets it twice"
    missing = all_addresses(N) - set(received)
    assert len(missing) <= 1 and (not missing or "held back" in out)  # at most the one in flight at the kill


def test_two_different_issues_send_at_the_same_time(tmp_path, fresh_url):
    folder = paced_folder(tmp_path / "nl")
    shutil.copy(folder / "issues" / "crash.yaml", folder / "issues" / "other.yaml")
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log) as port:
        env = env_for(port, fresh_url())
        a, b = start(folder, env), start(folder, env, "issues/other.yaml")
        results = [finish(a), finish(b)]
        received = Counter(to for to, _ in read_smtp_log(log))
    assert [r[0] for r in results] == [0, 0], results
    assert set(received) == all_addresses(N) and set(received.values()) == {2}  # once per issue
