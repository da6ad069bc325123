"""Several connections at once (`[delivery.smtp] connections`), for a relay a round trip away.

Each connection is its own provider in its own thread, carrying whole batches through the
same ledger steps as a single one (send.deliver_batch: 'sending' committed, the attempt,
the outcome), the ledger writes taken in turn under one lock. Everything else stays in the
calling thread, as in the one-connection loop: reading the list, the audience check, the
rate (a total across connections), the failure budget (counted in the order outcomes
arrive), progress, and Ctrl-C: `in_flight()` is held while batches are out, so a stop
waits for each of them to be recorded (a second signal gives up; the next start names
them uncertain).

A connection the relay refuses as one too many (421, "too many connections"), at the
start or later, is closed and not replaced: the send goes on with fewer, said once in the
summary, and a batch it was carrying goes out on another.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections import deque
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Iterator

from newsletter_mailer.providers.base import Crowded, Outcome, Provider, Recipient

if TYPE_CHECKING:
    from newsletter_mailer.ledger import Ledger
    from newsletter_mailer.send import Summary

log = logging.getLogger(__name__)


class _InTurn:
    """The ledger's writes one at a time: one connection (SQLite or PostgreSQL) shared by the lanes."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.lock = threading.Lock()
        self.sealed = False  # given up: what the lanes learn later is not written over 'uncertain'

    def begin(self, *args, **kw) -> None:
        with self.lock:
            if self.sealed:
                raise RuntimeError("the send was given up")
            self.ledger.begin(*args, **kw)

    def finish(self, *args, **kw) -> None:
        with self.lock:
            if not self.sealed:
                self.ledger.finish(*args, **kw)

    def last(self, *args, **kw) -> None:
        """The calling thread's final write: nothing from the lanes after it."""
        with self.lock:
            self.sealed = True
            self.ledger.finish(*args, **kw)


class Pool:
    """The open connections, each with a thread that takes batches from `jobs` until told to stop."""

    def __init__(self, first: Provider, wanted: int, deliver: Callable[[Provider, list[Recipient]], Summary]):
        self.deliver = deliver
        self.jobs: queue.SimpleQueue[list[Recipient] | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[list[Recipient], Summary | None, BaseException | None]] = \
            queue.SimpleQueue()
        self.lock = threading.Lock()
        self.wanted = wanted
        self.refusal: str | None = None  # why the relay took fewer connections, once
        try:
            lanes = [first] + _more(first, wanted - 1)
        except BaseException:
            first.close()
            raise
        if len(lanes) < wanted:
            self.refusal = "refused a connection as one too many at the start"
        self.live = len(lanes)
        self.threads = [threading.Thread(target=self._lane, args=(lane,), daemon=True, name=f"smtp-{i}")
                        for i, lane in enumerate(lanes)]
        for lane in lanes:
            lane.retire = self._retire
        for t in self.threads:
            t.start()

    def _retire(self) -> bool:
        """One connection fewer, if another still works (the last one retries as a single one does)."""
        with self.lock:
            if self.live <= 1:
                return False
            self.live -= 1
            return True

    def _lane(self, provider: Provider) -> None:
        try:
            while (batch := self.jobs.get()) is not None:
                try:
                    self.done.put((batch, self.deliver(provider, batch), None))
                except Crowded as exc:
                    with self.lock:
                        self.refusal = self.refusal or f"refused a connection as one too many ({exc.error})"
                    self.done.put((batch, None, exc))
                    return  # this connection is given up; the batch goes to another
                except BaseException as exc:  # noqa: BLE001 - the calling thread decides
                    self.done.put((batch, getattr(exc, "part", None), exc))
        finally:
            provider.close()

    def stop(self, wait: bool = True) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads if wait else ():
            t.join()

    def note(self) -> str | None:
        if self.refusal is None:
            return None
        return (f"the SMTP server {self.refusal}: the send went on with {self.live} of {self.wanted} connections "
                "(set delivery.smtp.connections to at most that)")


def _more(first: Provider, n: int) -> list[Provider]:
    """n more connections opened side by side (each its own greeting, TLS and one AUTH); fewer
    when the relay refuses some as too many. Any other refusal stops the send before it starts."""
    if n <= 0:
        return []
    results: list[Provider | None | BaseException] = [None] * n

    def open_one(i: int) -> None:
        try:
            results[i] = first.another()
        except BaseException as exc:  # noqa: BLE001
            results[i] = exc

    threads = [threading.Thread(target=open_one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = [r for r in results if r is not None and not isinstance(r, BaseException)]
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is not None:
        for p in opened:
            p.close()
        raise error
    return opened


def _lane_delivery(deliver_one: Callable, locked: _InTurn, summary: Summary, provider: Provider,
                   batch: list[Recipient]) -> Summary:
    """One batch on one lane, counted in a part of its own; an error carries the part counted before it."""
    from newsletter_mailer.send import Summary

    part = Summary(plan=summary.plan, provider=summary.provider, when=summary.when)
    try:
        deliver_one(locked, provider, batch, part)
    except Crowded:
        raise
    except BaseException as exc:
        exc.part = part  # what was counted before it raised
        raise
    return part


def _give_up(locked: _InTurn, slug: str, summary: Summary, out: Iterable[list[Recipient]]) -> None:
    """A second signal (a hung server): what is out is recorded uncertain now, as one connection's would be."""
    for batch in out:
        summary.uncertain += len(batch)
        summary.uncertain_emails += [r.email for r in batch]
        try:
            locked.last(slug, [Outcome(r.email, False, uncertain=True,
                                         error="the send was interrupted during this attempt") for r in batch])
        except Exception:  # noqa: BLE001 - the ledger failing too: the next start names them uncertain
            log.warning("could not record %d message(s) in flight as uncertain", len(batch))


def deliver_pooled(first: Provider, ledger: Ledger, slug: str, batches: Iterator[list[Recipient]],
                   summary: Summary, *, next_batch: Callable[[Iterator[list[Recipient]]], list[Recipient] | None],
                   deliver_one: Callable, progress: Callable[[int], None] | None,
                   in_flight: Callable[[], ContextManager[None]], check: Callable[[], BaseException | None]) -> None:
    """Batches out on every connection until the list is done or something stops the send;
    what is in flight is always waited for and counted before that stop is raised.

    next_batch(batches) gives the next batch to attempt (rate and audience applied), None at the end;
    deliver_one(ledger, provider, batch, part) runs send.deliver_batch; check() says whether to stop."""
    locked = _InTurn(ledger)
    pool = Pool(first, first.pool_size, functools.partial(_lane_delivery, deliver_one, locked, summary))
    retry: deque[list[Recipient]] = deque()
    out: dict[int, list[Recipient]] = {}  # the batches the lanes have, by id
    stop: BaseException | None = None
    ended = waiting = False

    def collect() -> tuple[list[Recipient], Summary | None, BaseException | None]:
        batch, part, exc = pool.done.get()
        del out[id(batch)]
        if part is not None:
            summary.add(part)
        return batch, part, exc

    try:
        while True:
            with in_flight():
                while stop is None and len(out) < pool.live:
                    batch = retry.popleft() if retry else (None if ended else next_batch(batches))
                    if batch is None:
                        ended = True
                        break
                    out[id(batch)] = batch
                    pool.jobs.put(batch)
                if not out:
                    break
                waiting = True  # a signal that raises here is the second: the first is held
                batch, part, exc = collect()
                waiting = False
                if isinstance(exc, Crowded):
                    retry.append(batch)  # not sent: it goes out on another connection
                    continue
                if progress and exc is None:
                    progress(len(batch))
                stop = stop or exc or check()
    except BaseException:
        # The first signal, or the list failing: what is out is recorded by its lane; wait, and count it.
        try:
            while out and not waiting:
                collect()
        except BaseException:
            waiting = True
            raise
        finally:
            if waiting:
                _give_up(locked, slug, summary, out.values())
        raise
    finally:
        summary.notes += filter(None, [pool.note()])
        pool.stop(wait=not out)  # a lane stuck on a hung server is not waited for
    if stop is not None:
        raise stop
