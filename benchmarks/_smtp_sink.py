"""A local SMTP sink for the benchmarks: accepts every message and drops it (aiosmtpd).

python _smtp_sink.py PORT [LATENCY] — prints "ready", serves until its standard input closes,
then prints how many messages it accepted and how many connections it had. With LATENCY
(seconds) every reply waits that long first: a relay a round trip away.
"""

import asyncio
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

SESSIONS = 0


class Late(SMTP):
    latency = 0.0

    async def push(self, status):
        if self.latency:
            await asyncio.sleep(self.latency)
        await super().push(status)

    async def _handle_client(self):
        global SESSIONS
        SESSIONS += 1
        await super()._handle_client()


class LateController(Controller):
    def factory(self):
        return Late(self.handler, **self.SMTP_kwargs)


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def main() -> None:
    global SESSIONS
    sink = Sink()
    Late.latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    controller = LateController(sink, hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    SESSIONS = 0  # the controller's own readiness probe
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()
        print(f"{sink.count} {SESSIONS}", flush=True)


if __name__ == "__main__":
    main()
