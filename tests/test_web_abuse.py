"""`newsletter serve` under abuse (issue 19), against the real server: delivered links survive a
rename and a rotation, a guessable secret is refused, slow clients are shed, no redirect is
built from the Host header, and no client input puts a traceback in the log."""

from __future__ import annotations

import json
import os
import random
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from newsletter_mailer import files
from tests.helpers.webserver import ROOT, SECRET, start, stop

LEGACY = json.loads((ROOT / "tests" / "golden" / "tokens_before_stable_list_id.json").read_text(encoding="utf-8"))
SECURITY = ("content-security-policy", "x-content-type-options", "referrer-policy", "cache-control")


def _legacy_state(folder: Path) -> Path:
    """A state folder as today's code left it: the fixture's secret, nothing else."""
    state = folder / "state"
    files.make_private_dir(state)
    files.create_new(state / "secret", LEGACY["secret"] + "\n", files.PRIVATE)
    return state


def _rename(folder: Path, name: str) -> None:
    path = folder / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1), encoding="utf-8")


def _restart(server, folder: Path):
    stop(server)
    return start(folder, serve=True, secret=None, settings_file=folder / "newsletter.toml", state=folder / "state")


def _raw(url: str, data: bytes, timeout: float = 10) -> bytes:
    """data sent as it is on a new connection; everything read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def _tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback")


# --- tokens: a rename and a rotation break no delivered link ---------------------------------------

def test_a_token_from_before_the_change_unsubscribes_after_a_rename_and_a_rotation(tmp_path):
    _legacy_state(tmp_path)
    server = start(tmp_path, serve=True, secret=None, state=tmp_path / "state")  # records today's List-Id
    try:
        _rename(tmp_path, "CSCP newsletter")  # the display name, and the display part of a set list_id
        text = (tmp_path / "newsletter.toml").read_text(encoding="utf-8")
        (tmp_path / "newsletter.toml").write_text('list_id = "The CSCP letter <cscp-newsletter.example.org>"\n' + text,
                                                  encoding="utf-8")
        server = _restart(server, tmp_path)
        token = LEGACY["unsubscribe"]["reader@example.org"]
        r = httpx.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=30)
        assert r.status_code == 200 and "You are unsubscribed" in r.text, r.text
        rotated = subprocess.run([sys.executable, "-m", "newsletter_mailer", "secret", "rotate", "--keep-days", "7",
                                  "--config", str(tmp_path / "newsletter.toml"), "--state", str(tmp_path / "state")],
                                 capture_output=True, text=True, timeout=60,
                                 env={k: v for k, v in os.environ.items() if k != "NEWSLETTER_SECRET"})
        assert rotated.returncode == 0 and "keep working until" in rotated.stdout, rotated.stderr
        assert (tmp_path / "state" / "secret").read_text().strip() != LEGACY["secret"]
        server = _restart(server, tmp_path)
        token = LEGACY["unsubscribe"]["reader@example.org 2024-06-first"]
        r = httpx.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=30)
        assert r.status_code == 200 and "You are unsubscribed" in r.text, r.text
        assert httpx.get(f"{server.url}/confirm/{LEGACY['confirm']['token']}", timeout=30).status_code == 200
        store = server.audience()
        try:
            assert store.status("reader@example.org").status == "unsubscribed"
        finally:
            store.close()
        assert _tracebacks(server.log) == 0
    finally:
        stop(server)


def test_a_changed_list_id_stops_serve_unless_it_is_kept(tmp_path):
    server = start(tmp_path, serve=True)
    stop(server)
    text = (tmp_path / "newsletter.toml").read_text(encoding="utf-8")
    (tmp_path / "newsletter.toml").write_text('list_id = "CSCP <other.example.org>"\n' + text, encoding="utf-8")
    env = dict(os.environ, NEWSLETTER_SECRET=SECRET)
    args = [sys.executable, "-m", "newsletter_mailer", "serve", "--port", "0", "--config",
            str(tmp_path / "newsletter.toml"), "--state", str(tmp_path / "state")]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "list id changed from cscp-newsletter.example.org to other.example.org" in refused.stderr
    assert "previous_list_ids" in refused.stderr and "Traceback" not in refused.stderr
    with open(tmp_path / "newsletter.toml", "a", encoding="utf-8") as f:
        f.write('previous_list_ids = ["cscp-newsletter.example.org"]\n')
    server = start(tmp_path, serve=True, settings_file=tmp_path / "newsletter.toml")
    try:
        from newsletter_mailer import tokens

        old = tokens.make_unsubscribe(SECRET.encode(), "cscp-newsletter.example.org", "kept@example.org")
        assert httpx.post(f"{server.url}/u/{old}", timeout=30).status_code == 200
    finally:
        stop(server)


# --- the secret ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["newsletter-secret", "newsletter-secret-newsletter-secret",
                                   "web-test-secret-0123456789abcdef", "a" * 40, "correct horse battery staple x",
                                   "0123456789012345678901234567890123"])
def test_a_guessable_secret_is_refused_in_one_line(value):
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.unsubscribe import load_secret

    with pytest.raises(NewsletterError) as refused:
        load_secret(Path("/nonexistent"), {"NEWSLETTER_SECRET": value}, create=False)
    line = str(refused.value)
    assert "NEWSLETTER_SECRET" in line and "secrets.token_urlsafe(32)" in line and value not in line
    assert "\n" not in line


def test_a_guessable_secret_stops_serve_and_a_generated_one_is_accepted(tmp_path):
    from newsletter_mailer.unsubscribe import load_secret

    import secrets
    assert load_secret(tmp_path, {"NEWSLETTER_SECRET": secrets.token_urlsafe(32)})[0]
    assert load_secret(tmp_path, {"NEWSLETTER_SECRET": secrets.token_hex(32)})[0]
    (tmp_path / "newsletter.toml").write_text((ROOT / "newsletter.toml").read_text(encoding="utf-8"), encoding="utf-8")
    env = dict(os.environ, NEWSLETTER_SECRET="newsletter-secret-newsletter-secret")
    proc = subprocess.run([sys.executable, "-m", "newsletter_mailer", "serve", "--port", "0",
                           "--config", str(tmp_path / "newsletter.toml"), "--state", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "contains the word 'secret'" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_works_on_a_fresh_init_before_any_send(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_SECRET"}
    made = subprocess.run([sys.executable, "-m", "newsletter_mailer", "init", str(tmp_path / "nl")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert made.returncode == 0, made.stderr
    secret = tmp_path / "nl" / ".newsletter" / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(bytes.fromhex(secret.read_text().strip())) == 32
    server = start(tmp_path / "nl", serve=True, secret=None, settings_file=tmp_path / "nl" / "newsletter.toml",
                   state=tmp_path / "nl" / ".newsletter")
    try:
        r = httpx.get(f"{server.url}/subscribe", timeout=30)
        assert r.status_code == 200 and "Subscribe to" in r.text
    finally:
        stop(server)
    assert secret.read_text().strip() and _tracebacks(server.log) == 0


# --- slow clients ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("abuse"), serve=True)
    yield server
    stop(server)


@pytest.mark.slow
def test_slow_header_connections_are_closed_while_others_are_answered(served):
    host, port = served.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(200):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /subscribe HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    started, open_ = time.monotonic(), set(slow)
    try:
        answered = 0
        while open_ and time.monotonic() - started < 15:
            for s in list(open_):  # one more header line now and then: never a complete request
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    open_.discard(s)
            ready, _, _ = select.select(list(open_), [], [], 0.5)
            for s in ready:
                try:
                    if s.recv(1024) == b"":
                        open_.discard(s)
                except OSError:
                    open_.discard(s)
            if answered < 3 and httpx.get(f"{served.url}/style.css", timeout=5).status_code == 200:
                answered += 1
        assert not open_, f"{len(open_)} of 200 slow connections still open after 15 s"
        assert answered == 3
    finally:
        for s in slow:
            s.close()


@pytest.mark.slow
def test_a_body_that_never_finishes_is_answered_408_and_the_connection_closed(served):
    started = time.monotonic()
    out = _raw(served.url, b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                           b"\r\nContent-Length: 100\r\n\r\nemail=", timeout=20)
    assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 15


def test_the_serve_socket_sets_tcp_nodelay():
    from newsletter_mailer.web.serve import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY on the accepted ones too
    finally:
        sock.close()


# --- no redirects from the Host header; security headers on every answer ---------------------------

@pytest.mark.parametrize("path", ["/subscribe/", "/u/abcdefghijklmnopqrstuvwxyz/", "/confirm/abcdefghijklmnopqrstuvwx/",
                                  "/style.css/", "/hooks/sendgrid/", "//evil.example/", "/nothing"])
def test_trailing_slash_paths_with_a_hostile_host_get_no_redirect(served, path):
    for method in ("GET", "POST", "HEAD"):
        r = httpx.request(method, served.url + path, headers={"Host": "evil.example"}, timeout=30)
        assert r.status_code == 404 and "location" not in r.headers, (method, path, r.status_code, r.headers)
        assert all(h in r.headers for h in SECURITY), (method, path, r.headers)
        assert "evil.example" not in r.text


def test_every_kind_of_error_carries_the_security_headers(served):
    for method, path, kwargs, status in [
        ("PUT", "/subscribe", {}, 405), ("DELETE", "/u/abcdefghijklmnopqrstuvwxyz", {}, 405),
        ("POST", "/subscribe", {"content": b"x" * 70_000}, 413),
        ("POST", "/subscribe", {"content": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}}, 400),
        ("GET", "/u/not-a-token-at-all-but-long-enough", {}, 404), ("POST", "/hooks/sendgrid", {}, 503),
    ]:
        r = httpx.request(method, served.url + path, timeout=30, **kwargs)
        assert r.status_code == status, (method, path, r.status_code)
        assert all(h in r.headers for h in SECURITY), (method, path, r.headers)
        if status == 405:
            assert "allow" in r.headers


# --- no tracebacks for malformed bodies ------------------------------------------------------------

ROUTES = ["/", "/nothing", "/subscribe", "/subscribe/", "/style.css", "/u/abcdefghijklmnopqrstuvwxyz",
          "/confirm/abcdefghijklmnopqrstuvwxyz", "/hooks/sendgrid"]
BAD_CHUNKED = [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello0\r\n\r\n", b"-1\r\n\r\n", b"5\r\nhel",
               b"ffffffffffffffffff\r\n", b"3;x=\x00\r\nabc\r\n0\r\n\r\n", b"0\r\nBad Trailer\r\n\r\n"]


def test_malformed_chunked_bodies_on_every_route_leave_no_traceback(served):
    before = served.log.read_text(errors="replace").count("\n")
    sent = 0
    for path in ROUTES:
        for method in ("GET", "HEAD", "POST"):
            for body in BAD_CHUNKED:
                out = _raw(served.url, f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                       "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode() + body,
                           timeout=3)
                sent += 1
                if path != "/hooks/sendgrid":  # 503 by design there: no webhook key is configured
                    assert not out.startswith(b"HTTP/1.1 5"), (method, path, body, out[:60])
    time.sleep(0.5)  # let the server write its last lines (not a timing assertion)
    text = served.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    new = text.count("\n") - before
    assert new <= 2 * sent, f"{new} log lines for {sent} requests"  # an access line and at most one more


@pytest.mark.slow
def test_a_bounded_fuzz_of_the_routes_gives_no_5xx_and_no_traceback(served):
    rng = random.Random(19)
    methods = ["GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE", "PATCH", "G\x00T", "POST /x"]
    paths = ROUTES + ["/u/", "/u/%00", "/confirm/" + "A" * 2000, "/subscribe?email=%ff", "/%2e%2e/%2e%2e/etc",
                      "/u/" + "é" * 30, "*", "http://evil.example/subscribe", "/subscribe#x", "/\\evil.example"]
    headers = [b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999999", b"Transfer-Encoding: chunked",
               b"Transfer-Encoding: gzip, chunked", b"Content-Type: multipart/form-data; boundary=x",
               b"Content-Type: application/x-www-form-urlencoded", b"Host: evil.example", b"Host:", b"X-Forwarded-For: ::1",
               b"Expect: 100-continue", b"Connection: close", b"Cookie: a=" + b"b" * 5000, b"Bad Header: x", b"\x00: y"]
    bodies = [b"", b"email=a%40b.c&consent=yes", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"--x\r\nContent-Disposition:",
              bytes(rng.getrandbits(8) for _ in range(300)), b"email=" + b"%" * 500, b"{\"json\": [1,2]}"]
    statuses = []
    for _ in range(400):
        request = (f"{rng.choice(methods)} {rng.choice(paths)} HTTP/1.1\r\n".encode("utf-8", "surrogateescape") +
                   b"".join(h + b"\r\n" for h in rng.sample(headers, rng.randint(0, 4))) + b"\r\n" + rng.choice(bodies))
        out = _raw(served.url, request, timeout=2)
        match = re.match(rb"HTTP/1.1 (\d{3})", out)
        if match and b"/hooks/sendgrid" not in request.split(b"\r\n", 1)[0]:  # 503 there: no key configured
            statuses.append(int(match.group(1)))
    assert statuses and not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert httpx.get(f"{served.url}/subscribe", timeout=30).status_code == 200
    assert _tracebacks(served.log) == 0, served.log.read_text(errors="replace")[-3000:]
