"""uvicorn's h11 protocol with deadlines: a client that trickles its request is disconnected.

uvicorn has no timeout for request headers, and a body that never finishes keeps the
connection open after the app's 408, so a few hundred slow clients hold a worker for as long
as they like. Here each connection gets one timer: the request headers must be complete within
HEADER_SECONDS of the connection (or of the previous response), the body within BODY_SECONDS
of the headers (plus a second for the app's 408 to go out), else the connection is closed.
Connections beyond MAX_CONNECTIONS are closed as they arrive, and one connection serves at
most MAX_REQUESTS requests. A client that sends more after its answer was sent (a malformed
chunked body on a route that never reads it) is disconnected with one log line, never a
traceback from uvicorn answering twice.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_SECONDS = 10.0
BODY_SECONDS = 10.0  # as web.pages.BODY_SECONDS: the app answers 408 then
GRACE_SECONDS = 1.0
MAX_CONNECTIONS = 1000  # per worker
MAX_REQUESTS = 10_000  # per connection (then Connection: close): keep-alive bounded in time (uvicorn) and in use
log = logging.getLogger("newsletter_mailer.web.slow_clients")


class ShedSlowClients(H11Protocol):
    header_seconds = HEADER_SECONDS
    body_seconds = BODY_SECONDS
    max_connections = MAX_CONNECTIONS
    max_requests = MAX_REQUESTS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._requests = 0
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection refused: %d connections open (the limit)", self.max_connections)
            transport.close()
            return
        self._arm(self.header_seconds, self._headers_late, None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:  # a new request's headers are in
            self._requests += 1
            if self._requests >= self.max_requests:
                self.cycle.keep_alive = False
            self._arm(self.body_seconds + GRACE_SECONDS, self._body_late, self.cycle)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()
        if self.cycle is cycle and self.conn.their_state is not h11.SEND_BODY:
            self._arm(self.header_seconds, self._headers_late, cycle)  # the next request's headers

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state is not h11.IDLE:  # already answered: nothing more can be said
            self.transport.close()
            return
        super().send_400_response(msg)

    def _arm(self, seconds: float, check, cycle) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, check, cycle)

    def _headers_late(self, cycle) -> None:
        if self.cycle is cycle:
            self._close(f"request headers not complete within {self.header_seconds:g} s")

    def _body_late(self, cycle) -> None:
        if self.cycle is cycle and self.conn.their_state is h11.SEND_BODY:
            self._close(f"request body not complete within {self.body_seconds:g} s")

    def _close(self, why: str) -> None:
        if not self.transport.is_closing():
            log.info("connection closed: %s", why)
            self.transport.close()
