"""A local SMTP sink for the benchmarks: accepts every message and drops it (aiosmtpd).

python _smtp_sink.py PORT — prints "ready", serves until its standard input closes, then prints
how many messages it accepted.
"""

import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def main() -> None:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()
        print(sink.count, flush=True)


if __name__ == "__main__":
    main()
