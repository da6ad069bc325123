"""Ctrl-C (SIGINT) and SIGTERM during a send: stop at once, and never lose what is in flight.

While `StopOnSignals` is active both signals raise `Interrupted` (a BaseException, as
KeyboardInterrupt is, so no `except Exception` swallows it). Between batches that happens at
once: nothing is in flight. Inside `in_flight()` (a batch from its ledger 'sending' row to its
recorded outcome) the first signal is held until the outcome is recorded, so a stop costs no
uncertain rows and the ledger stays exact; a second signal raises at once (a server that
hangs), and that batch is recorded uncertain (send.deliver_batch, or the next start).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A send stopped by a signal; exit with 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


class StopOnSignals:
    """`with StopOnSignals() as stop:` around a send; `stop.in_flight` around each batch.
    Outside the main thread (where Python cannot take signals) it does nothing."""

    def __init__(self) -> None:
        self._busy = False
        self._pending: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)
        self._saved.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._busy and self._pending is None:
            self._pending = signum  # raised once the batch's outcome is in the ledger
            return
        raise Interrupted(signum)

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
        if self._pending is not None:
            raise Interrupted(self._pending)
