"""A scripted stand-in for SendGrid's suppression endpoints, on a real local HTTP server.

Also `/v3/categories/stats` (per-day metrics of `stats`, by category) for `newsletter report`.
It pages as SendGrid does (`limit`, `offset`, inclusive `start_time` on `created`), checks the
Bearer key (401 otherwise), logs every request, and answers from `script` first when a test
wants a 429, a 5xx or anything else. POSTs: mail/send (kept in `mail`), mail/batch (a new
batch id each time) and user/scheduled_sends (a cancel, kept in `cancels`; a second cancel of
the same batch is a 400, as SendGrid answers). Used by tests/test_sendgrid_sync.py and, as
`python -m tests.helpers.sendgrid_api COUNT`, by benchmarks/bench_sync.py (COUNT generated
bounces, made per page so the server holds none of them).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence
from urllib.parse import parse_qsl, urlsplit

KEY = "SG.test-sync-key-0123456789"


class Generated(Sequence):
    """count bounce entries, each made when asked for."""

    def __init__(self, count: int, created: int = 1_700_000_000):
        self.count, self.created = count, created

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if not 0 <= i < self.count:
            raise IndexError(i)
        return {"created": self.created, "email": f"reader{i}@example.com",
                "reason": "550 5.1.1 user unknown", "status": "5.1.1"}


@dataclass
class FakeSendGrid:
    lists: dict[str, Sequence] = field(default_factory=dict)        # path -> entries (or addresses)
    script: list[tuple[int, dict, bytes]] = field(default_factory=list)  # answered first, in order
    requests: list[tuple[str, dict, str | None]] = field(default_factory=list)
    mail: list[dict] = field(default_factory=list)  # mail/send bodies accepted (202)
    batches: list[str] = field(default_factory=list)  # batch ids made by mail/batch
    cancels: list[dict] = field(default_factory=list)  # user/scheduled_sends bodies accepted
    stats: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)  # category -> [(YYYY-MM-DD, metrics)]
    url: str = ""

    def post(self, path: str, body: dict, auth: str | None) -> tuple[int, dict, bytes]:
        """A POST: the key checked, then mail/send, mail/batch or user/scheduled_sends."""
        self.requests.append((path, {}, auth))
        if auth != f"Bearer {KEY}":
            return 401, {}, b'{"errors": [{"field": null, "message": "authorization required"}]}'
        if path == "/v3/mail/send":
            self.mail.append(body)
            return 202, {"X-Message-Id": "fake-message-id"}, b""
        if path == "/v3/mail/batch":
            self.batches.append(f"FakeBatch{len(self.batches) + 1}")
            return 201, {}, json.dumps({"batch_id": self.batches[-1]}).encode()
        if path == "/v3/user/scheduled_sends":
            if any(c["batch_id"] == body.get("batch_id") for c in self.cancels):
                return 400, {}, b'{"errors": [{"field": null, "message": "batch already cancelled"}]}'
            self.cancels.append(body)
            return 201, {}, json.dumps(body).encode()
        return 404, {}, b"{}"

    def answer(self, path: str, query: dict, auth: str | None) -> tuple[int, dict, bytes]:
        self.requests.append((path, query, auth))
        if self.script:
            return self.script.pop(0)
        if auth != f"Bearer {KEY}":
            return 401, {}, b'{"errors": [{"field": null, "message": "authorization required"}]}'
        if path == "/v3/categories/stats":
            return self.category_stats(query)
        entries = self.lists.get(path)
        if entries is None:
            return (200, {}, b"[]") if path.startswith("/v3/suppression/") else (404, {}, b"{}")
        if "start_time" in query:
            entries = [e for e in entries if e["created"] >= int(query["start_time"])]
        if "limit" in query:
            offset = int(query.get("offset", 0))
            entries = entries[offset:offset + int(query["limit"])]
        return 200, {}, json.dumps(list(entries)).encode()

    def category_stats(self, query: dict) -> tuple[int, dict, bytes]:
        """SendGrid's per-day answer for the asked categories, from start_date (required, as is
        categories) on; 400 for a missing parameter or an aggregation other than by day."""
        if not query.get("start_date") or not query.get("categories") or query.get("aggregated_by") != "day":
            return 400, {}, b'{"errors": [{"field": "start_date", "message": "missing parameter"}]}'
        asked = query["categories"].split(",")
        days = sorted({d for c in asked for d, _ in self.stats.get(c, ()) if d >= query["start_date"]})
        body = [{"date": d, "stats": [{"type": "category", "name": c, "metrics": m}
                                      for c in asked for day, m in self.stats.get(c, ()) if day == d]}
                for d in days]
        return 200, {}, json.dumps(body).encode()


def serve(fake: FakeSendGrid) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status, headers, body = fake.answer(parts.path, dict(parse_qsl(parts.query)),
                                                self.headers.get("Authorization"))
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            status, headers, answer = fake.post(urlsplit(self.path).path, body, self.headers.get("Authorization"))
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    """COUNT: serve COUNT generated bounces on a free port (printed) until standard input closes."""
    server = serve(fake := FakeSendGrid({"/v3/suppression/bounces": Generated(int(sys.argv[1]))}))
    print(fake.url, flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
