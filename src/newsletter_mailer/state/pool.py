"""The audience store for a long-running server (`newsletter serve`): one per request.

Requests use it from the server's thread pool (never blocking the event loop). SQLite: the one
connection the process opened, one thread at a time (writers queue on the file). PostgreSQL: a
small psycopg_pool per worker process, opened at start-up and closed at shutdown (the app's
lifespan); each request checks a connection out, checked alive first, so after the server
restarts the dead ones are dropped and new ones made: the endpoint recovers by itself. A
request that cannot get one within TIMEOUT fails with a storage error (the app answers 503).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from newsletter_mailer.audience.store import Audience
from newsletter_mailer.state.db import CONNECT, Database, where

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.state.handle import State

POOL_SIZE = 4      # per worker: requests waiting on one address's lock leave the others a connection
TIMEOUT = 5.0      # seconds a request waits for a connection before it is answered 503


class Stores:
    """`with stores.audience() as audience:` — an Audience for one unit of work."""

    def __init__(self, state: State):
        self.url = url = state.url
        self._turn = threading.Lock()  # the one SQLite connection: a transaction at a time
        if url is None:
            self._single: Audience | None = state.audience()
            self._pool = None
            return
        state.audience().close()  # the schema checked now: a wrong one stops start-up
        from psycopg_pool import ConnectionPool

        self._single = None
        self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, timeout=TIMEOUT, open=False,
                                    check=ConnectionPool.check_connection, name="newsletter-serve",
                                    kwargs={**CONNECT, "connect_timeout": 5,
                                            "application_name": "newsletter-serve"})

    def open(self) -> None:
        if self._pool is not None:
            self._pool.open(wait=False)  # a database down at start-up: requests get 503 until it is up

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._single is not None:
            self._single.close()

    @contextmanager
    def audience(self) -> Iterator[Audience]:
        if self._single is not None:
            with self._turn:
                yield self._single
            return
        with self._pool.connection() as conn:
            yield Audience(Database(conn, "postgres", where(self.url)))
