"""Crash safety: `newsletter send` killed with SIGKILL at random moments, again and again, and
resumed each time with the same command, until the send completes.

The receiving servers run in processes of their own and log every message they accept
(flushed and fsynced before they answer), so their logs are the ground truth. After the
last resume: nobody got the issue twice; everyone who got nothing is named by
`newsletter status ISSUE --list-uncertain`; at most one recipient per kill is uncertain
over SMTP (one request's worth, up to 1000, over SendGrid); and the ledger agrees with
what the server received, message id for message id.

Kills are aimed three ways: right after the ledger's WAL file changes (a ledger write has
just happened, the next is near), right after the server logged a message or request
(the reply is on its way: the classic "delivered but not recorded" moment), and at
uniformly random times since start (start-up, planning, anywhere).

Each test runs with the ledger and the store in SQLite files and in PostgreSQL (the `backend`
fixture; the database URL reaches the send through NEWSLETTER_DATABASE_URL). There the "wal"
kills watch the server's write-ahead log, and PostgreSQL runs fewer kills (at least 5).

The figures (kills, uncertain, duration) are printed: run with -s to see them.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from tests.helpers.postgres import query
from tests.helpers.sinks import SinkProcess, read_sendgrid_log, read_smtp_log, wait_until

pytestmark = pytest.mark.slow

SECRET = "Xz6FSt255BH1e1yEavzI--Wd0iBu8sNZdIb2qJ6hOHY"
API_KEY = "SG.crash-test-planted-key"
SEED = int(os.environ.get("NEWSLETTER_CRASH_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)


def make_folder(root: Path, n: int) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, root / "newsletter.toml")
    (root / "issues").mkdir()
    (root / "issues" / "crash.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    with open(root / "subs.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "School Year"])
        for i in range(n):
            w.writerow([f"reader{i:05d}@example.org", f"Reader {i}", f"Year {7 + i % 6}"])
    return root


def all_addresses(n: int) -> set[str]:
    return {f"reader{i:05d}@example.org" for i in range(n)}


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SMTP_", "SENDGRID_", "NEWSLETTER_"))}
    env.update(NEWSLETTER_SECRET=SECRET, NEWSLETTER_BACKOFF_BASE="0.01", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cli(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "newsletter_mailer", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


@dataclass
class Figures:
    provider: str
    subscribers: int
    kills: int = 0
    kinds: Counter = field(default_factory=Counter)
    in_flight_at_kill: list[int] = field(default_factory=list)  # 'sending' rows in the ledger after each kill
    timeline: list[tuple[str, float, int, int]] = field(default_factory=list)  # kind, s since start, logged, in flight
    runs: int = 0
    seconds: float = 0.0


class Watch:
    """What the test can see of a running send: the ledger's WAL file (PostgreSQL: the newest
    segment in the server's pg_wal folder) and the server's log."""

    def __init__(self, wal: Path, log: Path):
        self.wal, self.log = wal, log

    def wal_sig(self):
        try:
            path = max(self.wal.glob("0*")) if self.wal.is_dir() else self.wal  # not archive_status/
            st = os.stat(path)
        except (FileNotFoundError, ValueError):
            return None
        return path.name, st.st_size, st.st_mtime_ns

    def log_lines(self) -> int:
        try:
            with open(self.log, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0


def in_flight(state: Path, url: str | None) -> int:
    """'sending' rows in the ledger as the kill left it, read from a copy (a reader of the
    original would checkpoint the WAL and tidy up what the resume should find)."""
    if url is not None:
        return query(url, "SELECT count(*) FROM deliveries WHERE status='sending'")[0][0]
    src = state / "ledger.sqlite3"
    if not src.exists():
        return 0
    tmp = state.parent / "ledger-copy"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for suffix in ("", "-wal", "-shm"):
        if (state / f"ledger.sqlite3{suffix}").exists():
            shutil.copy(state / f"ledger.sqlite3{suffix}", tmp / f"ledger.sqlite3{suffix}")
    db = sqlite3.connect(tmp / "ledger.sqlite3")
    try:
        return db.execute("SELECT count(*) FROM deliveries WHERE status='sending'").fetchone()[0]
    finally:
        db.close()
        shutil.rmtree(tmp, ignore_errors=True)


def kill_and_resume(folder: Path, env: dict[str, str], args: list[str], watch: Watch, figures: Figures,
                    rng: random.Random, kinds: list[str], *, n_kills: int, step: int, mid_window: float,
                    wal_delay: float, time_window: tuple[float, float],
                    url: str | None = None) -> subprocess.CompletedProcess:
    """Start the send; kill it n_kills times (when it is still running) and resume; then let
    the last run finish. Returns the finishing run."""
    t0 = time.monotonic()
    state = folder / ".newsletter"
    while True:
        figures.runs += 1
        proc = subprocess.Popen([sys.executable, "-m", "newsletter_mailer", *args], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        if figures.kills < n_kills:
            kind = kinds[figures.kills % len(kinds)]
            alive = lambda: proc.poll() is None  # noqa: E731
            if kind == "time":
                time.sleep(rng.uniform(*time_window))
            else:
                # let the send get some way in first, so kills spread over the whole list
                start = watch.log_lines()
                target = start + rng.randint(0, step)
                wait_until(lambda: watch.log_lines() >= target or not alive(), 60)
                if kind == "wal":
                    sig = watch.wal_sig()
                    wait_until(lambda: watch.wal_sig() != sig or not alive(), 60, poll=0.0002)
                    time.sleep(rng.uniform(0, wal_delay))  # during the write, or just after it
                else:  # "server": the server has just logged a message/request
                    now = watch.log_lines()
                    wait_until(lambda: watch.log_lines() > now or not alive(), 60, poll=0.0002)
                    if mid_window:
                        time.sleep(rng.uniform(0, mid_window))
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
                figures.kills += 1
                figures.kinds[kind] += 1
                figures.in_flight_at_kill.append(in_flight(state, url))
                figures.timeline.append((kind, round(time.monotonic() - started, 3), watch.log_lines(),
                                         figures.in_flight_at_kill[-1]))
                continue
        out, err = proc.communicate(timeout=300)
        figures.seconds = time.monotonic() - t0
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def uncertain_listed(folder: Path, env: dict[str, str]) -> tuple[set[str], str]:
    st = cli(folder, env, "status", "issues/crash.yaml", "--list-uncertain")
    assert st.returncode == 0, st.stderr
    listed = {line.split("\t")[1] for line in st.stdout.splitlines() if line.startswith("uncertain\t")}
    return listed, st.stdout


def ledger(folder: Path, url: str | None) -> list[tuple[str, str, str | None]]:
    if url is not None:
        return query(url, "SELECT email, status, message_id FROM deliveries WHERE issue='crash'")
    db = sqlite3.connect(folder / ".newsletter" / "ledger.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return list(db.execute("SELECT email, status, message_id FROM deliveries WHERE issue='crash'"))
    finally:
        db.close()


def resend_to_those_not_received(folder: Path, env: dict[str, str], not_received: set[str],
                                 provider_args: list[str]) -> subprocess.CompletedProcess:
    """The human decision: the server's own log says who never got it; resend to just them."""
    with open(folder / "resend.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "School Year"])
        for e in sorted(not_received):
            w.writerow([e, "", ""])
    return cli(folder, env, "send", "issues/crash.yaml", "--list", "resend.csv", *provider_args,
               "--yes", "--resend-uncertain")


# --- SMTP: 1,000 subscribers, at least 10 kills ------------------------------------------------


def on(database_url: str | None, pg_cluster_wal: Path | None, sqlite_wal: Path) -> tuple[dict[str, str], Path]:
    """The environment naming the database (none for SQLite) and the WAL the "wal" kills watch."""
    if database_url is None:
        return {}, sqlite_wal
    return {"NEWSLETTER_DATABASE_URL": database_url}, pg_cluster_wal


@pytest.fixture
def pg_wal(backend, request) -> Path | None:
    return request.getfixturevalue("pg_cluster").data / "pg_wal" if backend == "postgres" else None


@pytest.mark.parametrize("connections", [1, 4])
def test_smtp_send_survives_repeated_sigkill(tmp_path: Path, database_url, pg_wal, connections):
    n = 1000
    rng = random.Random(SEED)
    (tmp_path / "nl").mkdir()
    folder = make_folder(tmp_path / "nl", n)
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log) as port:
        extra, wal = on(database_url, pg_wal, folder / ".newsletter" / "ledger.sqlite3-wal")
        env = base_env(SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_SECURITY="none",
                       SMTP_CONNECTIONS=str(connections), **extra)
        args = ["send", "issues/crash.yaml", "--list", "subs.csv", "--provider", "smtp", "--yes"]
        figures = Figures("smtp", n)
        watch = Watch(wal, log)
        least = 10 if database_url is None else 5
        last = kill_and_resume(folder, env, args, watch, figures, rng, ["wal", "server", "time", "wal", "server"],
                               n_kills=least + 4, step=40, mid_window=0.0, wal_delay=0.003,
                               time_window=(0.0, 1.0), url=database_url)
        assert last.returncode == 0, last.stdout + last.stderr
        assert "Traceback" not in last.stderr and last.stderr == ""

        received = read_smtp_log(log)
        counts = Counter(to for to, _ in received)
        twice = {e: c for e, c in counts.items() if c > 1}
        assert not twice, f"received more than once: {twice} (seed {SEED})"
        everyone = all_addresses(n)
        assert set(counts) <= everyone

        uncertain, status_out = uncertain_listed(folder, env)
        not_received = everyone - set(counts)
        assert not_received <= uncertain, f"lost without a trace: {sorted(not_received - uncertain)[:10]}"
        assert len(uncertain) <= figures.kills * connections, (uncertain, figures)
        # a message in flight per connection at most: batch size 1
        assert max(figures.in_flight_at_kill) <= connections
        assert figures.kills >= least
        assert "(per message)" in status_out
        if uncertain:
            assert "held back" in last.stdout and "--resend-uncertain" in last.stdout

        rows = ledger(folder, database_url)
        by_status = Counter(s for _, s, _ in rows)
        assert set(by_status) <= {"sent", "uncertain"}, by_status
        assert by_status["sent"] + by_status["uncertain"] == n
        msgid = dict(received)
        sent = {e: m for e, s, m in rows if s == "sent"}
        # every 'sent' row is a message the server has, with the same Message-ID
        assert all(msgid.get(e) == m for e, m in sent.items()), "ledger says sent, server disagrees"
        assert set(counts) <= set(sent) | uncertain
        arrived_uncertain = uncertain & set(counts)
        assert by_status["sent"] + len(arrived_uncertain) == len(received)

        # the operator checks the server's log and resends to those who really got nothing
        resend = resend_to_those_not_received(folder, env, not_received, ["--provider", "smtp"])
        if not_received:
            assert resend.returncode == 0, resend.stdout + resend.stderr
        final = Counter(to for to, _ in read_smtp_log(log))
        assert set(final) == everyone and set(final.values()) == {1}

    print(f"\nRELIABILITY smtp ({'postgres' if database_url else 'sqlite'}, {connections} connection(s)): seed {SEED}; {n} subscribers; {figures.kills} SIGKILLs survived "
          f"({dict(figures.kinds)}); {figures.runs} runs in {figures.seconds:.1f} s; "
          f"{len(received)} messages received, 0 twice; {len(uncertain)} uncertain "
          f"({len(arrived_uncertain)} had arrived, {len(not_received)} had not); "
          f"in flight per kill: {Counter(figures.in_flight_at_kill)}; timeline {figures.timeline}")


# --- SendGrid: 20,000 subscribers = 20 requests of 1000, at least 10 kills, mostly mid-request -----------------------


def test_sendgrid_send_survives_repeated_sigkill(tmp_path: Path, database_url, pg_wal):
    n = 20000 if database_url is None else 10000
    rng = random.Random(SEED + 1)
    (tmp_path / "nl").mkdir()
    folder = make_folder(tmp_path / "nl", n)
    log = tmp_path / "sendgrid.log"
    with SinkProcess("sendgrid", log, "0.5", env={"SINK_API_KEY": API_KEY}) as port:
        extra, wal = on(database_url, pg_wal, folder / ".newsletter" / "ledger.sqlite3-wal")
        env = base_env(SENDGRID_API_KEY=API_KEY, SENDGRID_API_HOST=f"http://127.0.0.1:{port}", **extra)
        args = ["send", "issues/crash.yaml", "--list", "subs.csv", "--provider", "sendgrid", "--yes"]
        figures = Figures("sendgrid", n)
        watch = Watch(wal, log)
        least = 10 if database_url is None else 5
        # "server" kills land within the 0.5 s the server takes to answer: mid-request
        last = kill_and_resume(folder, env, args, watch, figures, rng,
                               ["time", "server", "wal", "server", "time", "wal", "server"],
                               n_kills=least + 2, step=1, mid_window=0.4, wal_delay=0.05, time_window=(0.0, 2.0),
                               url=database_url)
        assert last.returncode == 0, last.stdout + last.stderr
        assert last.stderr == ""

        requests = read_sendgrid_log(log)
        assert all(len(r["to"]) <= 1000 for r in requests)
        counts = Counter(to for r in requests for to in r["to"])
        twice = {e: c for e, c in counts.items() if c > 1}
        assert not twice, f"received more than once: {len(twice)} (seed {SEED})"
        everyone = all_addresses(n)
        uncertain, status_out = uncertain_listed(folder, env)
        not_received = everyone - set(counts)
        assert not_received <= uncertain
        assert max(figures.in_flight_at_kill) <= 1000
        assert len(uncertain) <= 1000 * figures.kills
        assert figures.kills >= least
        assert "per request" in status_out

        rows = ledger(folder, database_url)
        by_status = Counter(s for _, s, _ in rows)
        assert set(by_status) <= {"sent", "uncertain"}, by_status
        assert by_status["sent"] + by_status["uncertain"] == n
        request_of = {to: r["id"] for r in requests for to in r["to"]}
        sent = {e: m for e, s, m in rows if s == "sent"}
        assert all(request_of.get(e) == m for e, m in sent.items()), "ledger says sent, server disagrees"
        arrived_uncertain = uncertain & set(counts)
        assert by_status["sent"] + len(arrived_uncertain) == sum(counts.values())

        resend = resend_to_those_not_received(folder, env, not_received, ["--provider", "sendgrid"])
        if not_received:
            assert resend.returncode == 0, resend.stdout + resend.stderr
        final = Counter(to for r in read_sendgrid_log(log) for to in r["to"])
        assert set(final) == everyone and set(final.values()) == {1}

    print(f"\nRELIABILITY sendgrid ({'postgres' if database_url else 'sqlite'}): seed {SEED}; {n} subscribers; {figures.kills} SIGKILLs survived "
          f"({dict(figures.kinds)}); {figures.runs} runs in {figures.seconds:.1f} s; {len(requests)} requests, "
          f"{sum(counts.values())} recipients accepted, 0 twice; {len(uncertain)} uncertain "
          f"({len(arrived_uncertain)} had arrived, {len(not_received)} had not); "
          f"in flight per kill: {figures.in_flight_at_kill}; timeline {figures.timeline}")
