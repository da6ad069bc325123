"""Progress of a long run (send, audience sync, inbox): a rich bar on a terminal; in a log (cron,
systemd, CI: stdout not a terminal) a plain line at most every EVERY seconds, so the log shows the
run is alive without filling up. The clock is injectable: tests never wait for real time."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

import typer

EVERY = 10.0  # seconds between two plain lines, at most one line per interval
CLOCK: Callable[[], float] = time.monotonic  # the commands' clock: a test replaces it, never sleeps


class ProgressLines:
    """`advance(n)` after each step; prints "<label>: 1,200 of 10,000 <unit> (12%), 40.0 a second"
    once EVERY seconds have passed since the start or the last line, never more often."""

    def __init__(self, label: str, total: int | None, unit: str, *, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None):
        self.label, self.total, self.unit, self.every, self.clock = label, total, unit, every, clock
        self.write = write or typer.echo  # click.echo flushes: a pipe gets the line now, not at exit
        self.started = self.last = clock()
        self.done = 0

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        of = f" of {self.total:,}" if self.total else ""
        share = f" ({self.done * 100 // self.total}%)" if self.total else ""
        elapsed = now - self.started
        rate = f", {self.done / elapsed:,.1f} a second" if elapsed > 0 else ""
        return f"{self.label}: {self.done:,}{of} {self.unit}{share}{rate}"


@contextmanager
def progress(label: str, total: int | None, unit: str, *, min_total: int = 1, stream: TextIO | None = None,
             clock: Callable[[], float] | None = None) -> Iterator[Callable[[int], None] | None]:
    """`with progress("sending", n, "messages") as advance:` — advance(k) after k more are done
    (None: nothing to show). A terminal gets a rich bar for a known total of at least min_total;
    anything else the plain lines."""
    stream = stream if stream is not None else sys.stdout
    if not stream.isatty():
        yield ProgressLines(label, total, unit, clock=clock or CLOCK).advance
        return
    if total is None or total < min_total:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
