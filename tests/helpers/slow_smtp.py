"""An SMTP server a round trip away: aiosmtpd answering every command `latency` seconds late,
counting the sessions (connections) it had and how many were open at once, and answering
`421 … too many connections` to a connection beyond `limit` open ones, as a relay at its
per-client limit does (Postfix's smtpd_client_connection_count_limit).

    with SlowSmtp(latency=0.01, limit=4) as server:   # server.port, .received, .sessions, .most
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections import Counter

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.helpers.sinks import free_port


class _Slow(SMTP):
    def __init__(self, owner: SlowSmtp, *args, **kw):
        super().__init__(*args, **kw)
        self.owner = owner

    async def push(self, status) -> None:
        if self.owner.latency:
            await asyncio.sleep(self.owner.latency)
        await super().push(status)

    async def _handle_client(self) -> None:
        o = self.owner
        with o.lock:
            o.sessions += 1
            o.open += 1
            o.most = max(o.most, o.open)
            crowded = o.limit is not None and o.open > o.limit
            o.refused += crowded
        try:
            if crowded:
                await self.push("421 4.7.0 Error: too many connections from 127.0.0.1")
                self.transport.close()
                return
            await super()._handle_client()
        finally:
            with o.lock:
                o.open -= 1


class _Controller(Controller):
    def __init__(self, owner: SlowSmtp, handler, **kw):
        super().__init__(handler, **kw)
        self.owner = owner

    def factory(self):
        return _Slow(self.owner, self.handler, **self.SMTP_kwargs)


class SlowSmtp:
    """The server, in this process (aiosmtpd's own thread); what it accepted in `received`
    as (to, Message-ID, raw bytes)."""

    def __init__(self, latency: float = 0.0, limit: int | None = None, **kw):
        self.latency, self.limit = latency, limit
        self.lock = threading.Lock()
        self.sessions = self.open = self.most = self.refused = 0
        self.received: list[tuple[str, str, bytes]] = []
        self.port = free_port()
        self.controller = _Controller(self, self, hostname="127.0.0.1", port=self.port, **kw)

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            for to in envelope.rcpt_tos:
                self.received.append((to, msg["Message-ID"], bytes(envelope.content)))
        return "250 2.0.0 OK queued"

    def counts(self) -> Counter:
        return Counter(to for to, _, _ in self.received)

    def __enter__(self) -> SlowSmtp:
        self.controller.start()
        with self.lock:  # the controller's own readiness probe is not a client
            self.sessions = self.most = self.refused = 0
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
