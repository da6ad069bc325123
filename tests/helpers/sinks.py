"""Receiving ends for the reliability tests: an SMTP server (aiosmtpd) and a SendGrid-like
HTTP server, each able to run in a process of its own so that killing the sender never
touches them.

Both append what they accept to a log file, one line per message (SMTP: ``to<TAB>message-id``)
or per request (SendGrid: a JSON object ``{"id": …, "to": [...]}``), flushed and fsynced
before they answer: the log is the ground truth of what was delivered.

Run as a process::

    python -m tests.helpers.sinks smtp PORT LOG [DELAY_SECONDS]
    python -m tests.helpers.sinks sendgrid PORT LOG [DELAY_SECONDS]   # key in $SINK_API_KEY

Each prints ``ready`` on stdout once it listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _append(f, line: str) -> None:
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())


# --- SMTP -------------------------------------------------------------------------------------


class SmtpLogHandler:
    """aiosmtpd handler: logs each accepted message (To + Message-ID) before answering 250."""

    def __init__(self, log_path: str, delay: float = 0.0):
        self.f = open(log_path, "a", encoding="utf-8")
        self.parser = BytesHeaderParser()
        self.delay = delay  # seconds each message takes before it is accepted: a slow server

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = self.parser.parsebytes(bytes(envelope.content))
        msgid = (headers.get("Message-ID") or "").strip()
        for rcpt in envelope.rcpt_tos:
            _append(self.f, f"{rcpt}\t{msgid}")
        return "250 2.0.0 OK queued"


def run_smtp(port: int, log_path: str, delay: float = 0.0) -> None:
    from aiosmtpd.smtp import SMTP

    handler = SmtpLogHandler(log_path, delay)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", port))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


def read_smtp_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t", 1)) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- SendGrid ---------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the SendGrid sink answers to one request."""

    status: int = 202
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0          # seconds to wait before answering
    accept: bool | None = None  # record the request as delivered (default: status is 2xx)
    hang_up: bool = False       # close the connection without answering (after the delay)


class SendGridSink:
    """A small stand-in for SendGrid's v3 mail/send: checks the key, records accepted
    requests' recipients, and answers as scripted (``script`` is consumed one reply per
    request; when it runs out, ``default`` answers)."""

    def __init__(self, log_path: Path, key: str, *, default: Reply | None = None,
                 script: list[Reply] | None = None, port: int = 0):
        self.log_path = Path(log_path)
        self.key = key
        self.default = default or Reply()
        self.script = list(script or [])
        self.requests: list[dict] = []       # every request: {"auth", "to", "status", "body"}
        self.lock = threading.Lock()
        self.f = open(self.log_path, "a", encoding="utf-8")
        sink = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                sink._handle(self)

            def do_GET(self):  # the suppression lists a send syncs first: empty here, not recorded
                sink._suppressions(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up (timed out, killed)
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", port), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread: threading.Thread | None = None

    def _next(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def _suppressions(self, h: BaseHTTPRequestHandler) -> None:
        ok = h.headers.get("Authorization", "") == f"Bearer {self.key}" and h.path.startswith("/v3/suppression/")
        body = b"[]" if ok else b'{"errors":[{"message":"authorization required"}]}'
        h.send_response(200 if ok else 401)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n)
        auth = h.headers.get("Authorization", "")
        try:
            body = json.loads(raw)
            to = [p["to"][0]["email"] for p in body["personalizations"]]
        except (ValueError, KeyError, TypeError, IndexError):
            body, to = None, []
        if h.path != "/v3/mail/send":
            reply = Reply(404, b'{"errors":[{"message":"not found"}]}')
        elif auth != f"Bearer {self.key}":
            reply = Reply(401, b'{"errors":[{"message":"The provided authorization grant is invalid, expired, '
                               b'or revoked","field":null,"help":null}]}')
        elif body is None:
            reply = Reply(400, b'{"errors":[{"message":"Bad Request","field":null}]}')
        else:
            reply = self._next()
        msgid = uuid.uuid4().hex[:22]
        accepted = reply.accept if reply.accept is not None else 200 <= reply.status < 300
        with self.lock:
            self.requests.append({"auth": auth, "to": to, "status": reply.status, "body": body,
                                  "accepted": accepted})
            if accepted:
                _append(self.f, json.dumps({"id": msgid, "to": to}))
        if reply.delay:
            time.sleep(reply.delay)
        if reply.hang_up:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        h.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        if 200 <= reply.status < 300:
            headers.setdefault("X-Message-Id", msgid)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(reply.body)))
        h.end_headers()
        h.wfile.write(reply.body)

    def start(self) -> SendGridSink:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.f.close()

    def __enter__(self) -> SendGridSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_sendgrid_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_sendgrid(port: int, log_path: str, delay: float) -> None:
    sink = SendGridSink(Path(log_path), os.environ["SINK_API_KEY"], default=Reply(delay=delay), port=port)
    print("ready", flush=True)
    sink.server.serve_forever()


# --- running a sink in its own process ----------------------------------------------------------


class SinkProcess:
    """``with SinkProcess("smtp", log) as port:`` — the sink in a child process, stopped on exit."""

    def __init__(self, kind: str, log_path: Path, *args: str, env: dict[str, str] | None = None):
        self.kind, self.log_path, self.args = kind, Path(log_path), args
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> int:
        self.stderr_path = self.log_path.with_name(self.log_path.name + ".stderr")
        with open(self.stderr_path, "wb") as err:  # a file, not a pipe nobody reads (it would fill up)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.sinks", self.kind, str(self.port), str(self.log_path),
                 *self.args],
                cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"{self.kind} sink did not start: {line}{self.stderr_path.read_text()}")
        return self.port

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.0005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return pred()


if __name__ == "__main__":
    kind, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "smtp":
        run_smtp(port, log, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    elif kind == "sendgrid":
        run_sendgrid(port, log, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    else:
        raise SystemExit(f"unknown sink {kind}")


class MidDataDropServer:
    """A raw SMTP server of the test's own, for the one fault aiosmtpd cannot stage: while
    receiving the first message for `victim` (any recipient when None) it reads only the start
    of the data and resets the connection, the rest unread. Everything else is accepted and
    kept: `received` (recipients), `messages` (un-dot-stuffed data), `partial_bytes` read of the
    dropped one, `connections` made."""

    def __init__(self, victim: str | None = None):
        import socket
        import threading

        self.victim = victim
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the client cannot run ahead
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received: list[str] = []
        self.messages: list[bytes] = []
        self.partial_bytes = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(10)
            try:
                self._session(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def _session(self, conn) -> None:
        import socket
        import struct

        f = conn.makefile("rb")
        conn.sendall(b"220 raw.test ESMTP\r\n")
        rcpt = None
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line[:4].upper()
            if cmd in (b"EHLO", b"HELO"):
                conn.sendall(b"250 raw.test\r\n")
            elif cmd == b"RCPT":
                rcpt = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                conn.sendall(b"250 OK\r\n")
            elif cmd in (b"MAIL", b"RSET", b"NOOP"):
                conn.sendall(b"250 OK\r\n")
            elif cmd == b"QUIT":
                conn.sendall(b"221 Bye\r\n")
                return
            elif cmd == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                if not self.partial_bytes and self.victim in (None, rcpt):
                    self.partial_bytes = len(f.read(20000))
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return  # reset with the rest of the message unread
                lines = []
                while (line := f.readline()) != b".\r\n":
                    if not line:
                        return
                    lines.append(line[1:] if line.startswith(b".") else line)
                self.messages.append(b"".join(lines))
                self.received.append(rcpt)
                conn.sendall(b"250 queued\r\n")
            else:
                conn.sendall(b"500 what?\r\n")

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
