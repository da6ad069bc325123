"""The reader web app: one-click unsubscribes per second, each committed to the audience store on
disk before its answer, from a small keep-alive HTTP/1.1 client (several concurrent connections)
against `uvicorn newsletter_mailer.web:app` and `newsletter serve` (its slow-client deadlines,
connection cap and TCP_NODELAY socket), each in its own process (one worker, state in the temp
folder, access log on as deployed), side by side with the same server answering GET /style.css
(a route that touches neither token nor store) and with the store's own commits in-process.
Then the send path's per-batch question to the store: `suppressed_among` for 1,000 addresses
against 100,000 suppressions, beside a lookup in a Python dict of the same suppressions.

python benchmarks/bench_web.py [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, free_port, median, python, report

sys.path.insert(0, str(ROOT))
from tests.conftest import without_web  # noqa: E402 - the example's own [web] goes, ours is added

from newsletter_mailer import tokens
from newsletter_mailer.audience.store import Change
from newsletter_mailer.ledger import key
from newsletter_mailer.settings import load_settings
from newsletter_mailer.state import State

SECRET = "OGribwxO6xo5xxu4PGZXHF6TeWJiG7QyANa-xG14fgM"
CONNECTIONS = 8


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
               ok: tuple[bytes, ...] = (b"200",)) -> bytes:
    """One request on a kept-alive connection; the answer's head and body (Content-Length framed)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await reader.readexactly(length)
    if status not in ok:
        raise RuntimeError(f"HTTP {status.decode()}: {body[:200]!r}")
    return head + body


async def _load(port: int, requests: list[bytes], expect: bytes, ok: tuple[bytes, ...] = (b"200",)) -> float:
    """Requests/s with CONNECTIONS connections each sending its share one after another (each answer
    one of the `ok` statuses and holding `expect`)."""
    shares = [requests[i::CONNECTIONS] for i in range(CONNECTIONS)]
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in shares]

    async def worker(conn, share) -> None:
        for req in share:
            if expect not in await _one(*conn, req, ok):
                raise RuntimeError("unexpected answer")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, s) for c, s in zip(conns, shares)))
    took = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return len(requests) / took


def _post(token: str) -> bytes:
    body = b"List-Unsubscribe=One-Click"
    return (f"POST /u/{token} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _sign_up(address: str) -> bytes:
    body = f"email={address.replace('@', '%40')}&name=Bench+Reader&consent=yes".encode()
    return (f"POST /subscribe HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _open_limits() -> str:
    """Sign-up limits high enough that every benchmark sign-up is taken (whichever of them this
    version has): the row measures the work of a sign-up, not its refusal."""
    from newsletter_mailer.settings import Web

    wanted = {"signup_per_hour_client": 100_000, "signup_per_hour_total": 1_000_000}
    return "".join(f"{k} = {v}\n" for k, v in wanted.items() if k in Web.model_fields)


STYLE = b"GET /style.css HTTP/1.1\r\nHost: bench\r\n\r\n"


def _server(folder: Path, workers: int = 1, serve: bool = False, **env: str) -> tuple[subprocess.Popen, int, str]:
    """`uvicorn newsletter_mailer.web:app` with `workers` processes (or `newsletter serve`), state in
    `folder` (plus `env`); the list id tokens are sealed to."""
    port = free_port()
    config = folder / "newsletter.toml"
    config.write_text(without_web(EXAMPLE_SETTINGS.read_text(encoding="utf-8"))
                      + '\n[web]\nbase_url = "https://news.example.org"\n' + _open_limits(), encoding="utf-8")
    env = child_env(NEWSLETTER_CONFIG=str(config), NEWSLETTER_STATE=str(folder / "state"),
                    NEWSLETTER_OUTBOX=str(folder / "outbox"), NEWSLETTER_SECRET=SECRET, **env)
    log = open(folder / "server.log", "wb")
    command = ([python(), "-m", "newsletter_mailer", "serve", "--port", str(port), "--config", str(config),
                "--state", str(folder / "state")] if serve else
               [python(), "-m", "uvicorn", "newsletter_mailer.web:app", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers)])
    proc = subprocess.Popen(command,
                            env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:  # answering, and every worker started (each logs it once)
        try:
            asyncio.run(_load(port, [STYLE], b"body"))
            if (folder / "server.log").read_text().count("Application startup complete") >= workers:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start:\n" + (folder / "server.log").read_text())
        time.sleep(0.1)
    header = load_settings(config)[0].list_id_header
    try:
        from newsletter_mailer.listid import stable_id
    except ImportError:  # the code before stable list ids: tokens sealed to the whole header
        return proc, port, header
    return proc, port, stable_id(header)


def web_rows(n: int, repeat: int, serve: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, port, list_id = _server(folder, serve=serve)
        try:
            posts, gets, signups = [], [], []
            for rep in range(repeat):  # interleaved, fresh addresses each round: every POST is a new row
                toks = [tokens.make_unsubscribe(SECRET.encode(), list_id, f"r{rep}.{i}@example.org", "2020-09-cscp")
                        for i in range(n)]
                posts.append(asyncio.run(_load(port, [_post(t) for t in toks], b"You are unsubscribed")))
                gets.append(asyncio.run(_load(port, [STYLE] * n, b"body")))
                signups.append(asyncio.run(_load(port, [_sign_up(f"s{rep}.{i}@example.org") for i in range(n // 5)],
                                                 b"Check your inbox")))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        store = State(folder / "state").audience()
        stored = sum(1 for e in store.rows("unsubscribed") if e.issue == "2020-09-cscp")
        store.close()
        assert stored == n * repeat, f"{stored} unsubscribes in the store, expected {n * repeat}"
        commits = store_commits(folder / "raw", n)
    ours, floor = median(posts), median(gets)
    server = "`newsletter serve`" if serve else "uvicorn"
    return [Row(f"web: one-click unsubscribe POSTs, {CONNECTIONS} keep-alive connections, {server} "
                "(one process, access log on), store on disk", ours, "requests/s", floor=floor,
                floor_label="same server, GET /style.css", goal="≥ 500/s", met=ours >= 500,
                note=f"{n:,} POSTs a round, each a new address committed before its 200; "
                     f"the store alone commits {commits:,.0f} changes/s in-process"),
            Row(f"web: sign-up POSTs (new addresses, limits counted, confirmation email to the outbox), "
                f"{CONNECTIONS} keep-alive connections, same server", median(signups), "requests/s", floor=floor,
                floor_label="same server, GET /style.css",
                note=f"{n // 5:,} sign-ups a round, each counted against the limits, recorded pending and its "
                     "confirmation written before its 200")]


def store_commits(folder: Path, n: int, url: str | None = None, prefix: str = "raw") -> float:
    """Audience.record of one change per transaction (what each POST costs the store), per second,
    from one client: in the state folder, or in the PostgreSQL database `url`."""
    store = State(folder, url).audience()
    t0 = time.perf_counter()
    for i in range(n):
        store.record([Change(f"{prefix}.{i}@example.org", "unsubscribed", "one-click", issue="2020-09-cscp")])
    took = time.perf_counter() - t0
    store.close()
    return n / took


def _suppressed(i: int) -> str:
    return f"Suppressed.{i}@Example{i % 50}.org"


def batch_rows(suppressions: int, batch: int, repeat: int) -> list[Row]:
    """suppressed_among(batch) with `suppressions` in the store; a tenth of each batch is suppressed."""
    with tempfile.TemporaryDirectory() as tmp:
        store = State(Path(tmp)).audience()
        kinds = ("unsubscribed", "bounced", "complained")
        store.record(Change(_suppressed(i), kinds[i % 3], "import") for i in range(suppressions))
        known = dict(store.suppressed())
        batches = [[_suppressed((b * batch + i) * 7 % suppressions) if i % 10 == 0
                    else f"reader.{b}.{i}@example.org" for i in range(batch)] for b in range(repeat)]
        store_times, dict_times = [], []
        for emails in batches:
            t0 = time.perf_counter()
            found = store.suppressed_among(emails)
            store_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            floor = {k: known[k] for k in map(key, emails) if k in known}
            dict_times.append(time.perf_counter() - t0)
            assert found == floor and len(found) == batch // 10
        store.close()
    ours, base = median(store_times) * 1e3, median(dict_times) * 1e3
    return [Row(f"audience store: suppressed_among, a batch of {batch:,} against {suppressions:,} suppressions "
                "(one query per batch, on disk)", ours, "ms", floor=base,
                floor_label="a Python dict of the suppressions",
                note=f"{ours / batch * 1e3:.1f} µs an address; 1,000,000 rows = {1_000_000 // batch:,} batches "
                     f"= {ours * 1_000_000 / batch / 1e3:.2f} s")]


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat, batches = (1000, 3, 20) if args.quick else (5000, 3, 200)
    rows = web_rows(n, repeat) + web_rows(n, repeat, serve=True)
    rows += batch_rows(100_000, 1000, batches)
    report(rows, args)


if __name__ == "__main__":
    main()
