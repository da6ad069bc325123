"""One send per issue at a time, across processes and machines, with the holder named.

SQLite state (one host): an flock on `<slug>.lock` in the state folder, with the holder's
host, pid and start time written into the file. PostgreSQL state (editors on several
machines): a session-level advisory lock on a key derived from the slug, held on a connection
of its own for the send's life, and a `senders` row (host, pid, started) naming the holder.
Either lock is released by the kernel or the server when the holding process dies (its file
descriptor or its connection closes), so a SIGKILLed send never blocks the next one. The
loser stops with exit 1 (nothing wrong with the command: run it again later), nothing sent.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.folder import state_folder
from newsletter_mailer.state.db import Database, closed_on_error

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.state.handle import State

# The holder's row is matched with the server's own lock table, so a row left by a dead
# sender (or not yet written by a live one) never names the wrong holder.
HOLDER = """
SELECT s.host, s.pid, s.started FROM senders s
JOIN pg_locks l ON l.pid = s.backend AND l.locktype = 'advisory' AND l.granted
 AND l.classid::bigint = ? AND l.objid::bigint = ? AND l.objsubid = 1
WHERE s.issue = ?
"""


def pg_key(slug: str) -> int:
    """A signed 64-bit advisory-lock key for the issue (apart from the store's hashtext keys)."""
    return int.from_bytes(hashlib.sha256(b"newsletter send\0" + slug.encode()).digest()[:8], "big", signed=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Busy(NewsletterError):
    """Another process holds the lock (a sequence run skips that sequence this time)."""


def busy(slug: str, host: str, started: str) -> NewsletterError:
    """The loser's one line: who holds the issue, since when; nothing was sent."""
    return Busy(f"{slug} is being sent from {host} since {started}", exit_code=1,
                           hint="nothing was sent by this command; run it again when that send has finished")


class SendLock:
    """Held from acquire() to release(); release() is safe to call twice."""

    def __init__(self, release):
        self._release = release

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


def acquire(slug: str, state: State) -> SendLock:
    """Through `State.send_lock`: the database's lock when the state is there, else the folder's."""
    return _acquire_postgres(slug, state.url) if state.url is not None else _acquire_file(slug, state.folder)


def _acquire_file(slug: str, state_dir: Path) -> SendLock:
    state_folder(state_dir)  # a link refused, 0700
    path = state_dir / f"{slug}.lock"
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)  # never through a link
    except OSError as exc:
        raise NewsletterError(f"cannot open the send lock: {exc.strerror or exc}", path=path,
                              hint="a link there is refused: remove it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _file_holder(fd)
        os.close(fd)
        raise busy(slug, *holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{socket.gethostname()} {os.getpid()} {_now()}\n".encode(), 0)
    return SendLock(lambda: os.close(fd))


def _file_holder(fd: int) -> tuple[str, str]:
    """host and start time from the holder's file; a holder that has just taken it gets a moment."""
    for _ in range(20):
        fields = os.pread(fd, 512, 0).decode(errors="replace").split()
        if len(fields) == 3:
            return f"{fields[0]} (pid {fields[1]})", fields[2]
        time.sleep(0.05)
    return "another process", "a moment ago"


def _acquire_postgres(slug: str, url: str) -> SendLock:
    key = pg_key(slug)
    with closed_on_error(Database.postgres(url), url) as db:
        if not db.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            raise busy(slug, *_pg_holder(db, slug, key))
        db.execute("INSERT INTO senders (issue, host, pid, started, backend) VALUES (?,?,?,?,pg_backend_pid()) "
                   "ON CONFLICT (issue) DO UPDATE SET host=excluded.host, pid=excluded.pid, "
                   "started=excluded.started, backend=excluded.backend",
                   (slug, socket.gethostname(), os.getpid(), _now()))
    return SendLock(db.close)  # closing the connection releases the session's lock


def _pg_holder(db: Database, slug: str, key: int) -> tuple[str, str]:
    """The live holder's row (the winner writes it just after taking the lock: a moment's grace)."""
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    for _ in range(20):
        row = db.execute(HOLDER, (high, low, slug)).fetchone()
        if row is not None:
            return f"{row[0]} (pid {row[1]})", row[2]
        time.sleep(0.05)
    return "another machine", "a moment ago"


def hold_all(state: State) -> list[SendLock]:
    """Every issue's send lock this state has known, taken without waiting: while they are held no
    send runs, so no batch is between its ledger writes (`audience erase` rewrites the ledger then).
    Busy names the first live send; the locks taken so far are released."""
    if state.url is not None:
        with closed_on_error(Database.postgres(state.url), state.url) as db:
            slugs = [r[0] for r in db.execute("SELECT issue FROM senders ORDER BY issue")]
        db.close()
    else:
        slugs = sorted(p.name[:-len(".lock")] for p in state.folder.glob("*.lock")) if state.folder.is_dir() else []
    held: list[SendLock] = []
    try:
        for slug in slugs:
            held.append(acquire(slug, state))
    except BaseException:
        for lock in held:
            lock.release()
        raise
    return held
