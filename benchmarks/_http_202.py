"""A local HTTP server for the SendGrid benchmark: reads each request and answers 202, as
SendGrid's v3 mail/send does. python _http_202.py PORT — prints "ready", serves until its
standard input closes, then prints "<requests> <body bytes>"."""

import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

stats = {"requests": 0, "bytes": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        stats["requests"] += 1
        stats["bytes"] += len(body)
        self.send_response(202)
        self.send_header("X-Message-Id", f"bench-{stats['requests']}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        server.shutdown()
        print(stats["requests"], stats["bytes"], flush=True)


if __name__ == "__main__":
    main()
