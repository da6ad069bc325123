"""[tracking] clicks: /c/ redirects per second, each click committed to the audience store on disk
before its 302 (one new reader a click: a keyed-hash row, the link's counts, the burst check), from
bench_web.py's keep-alive client (8 connections) against `uvicorn newsletter_mailer.web:app`, one
process, beside the same server answering GET /style.css. Then the per-message cost of tracked links:
one complete message as bytes (Prepared.recipient + MessageTemplate.build) of the example issue with
`[tracking] clicks = true` (its 20 links through /c/: one reader half a message: two short keyed hashes) against the same without,
and the whole `newsletter send --provider outbox` process, tracked against untracked.

python benchmarks/bench_clicks.py [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, free_port, median, python, report, timed
from bench_web import CONNECTIONS, SECRET, STYLE, _load

from newsletter_mailer import tokens
from newsletter_mailer.audience import clicks
from newsletter_mailer.state import State

SLUG = "2020-09-cscp"
LINKS = [f"https://example.org/link/{i}" for i in range(1, 15)]


def _issue_for_everyone(folder: Path) -> Path:
    """The example issue without its `for:` lines: this measures the links, not the audiences. With
    them the send would compose each audience's edition (each with fewer links than the issue) and
    send one batch at a time instead of over the pool, on both sides of the comparison alike: the
    ratio would then mix those costs in and count fewer links for some readers. Tracking itself
    works with `for:` (tests/test_clicks_audiences.py); an edition's links are baked once per send."""
    issue = folder / "issues" / EXAMPLE_ISSUE.name
    issue.parent.mkdir(parents=True, exist_ok=True)
    text = EXAMPLE_ISSUE.read_text(encoding="utf-8")
    issue.write_text("".join(l for l in text.splitlines(True) if not l.lstrip().startswith("for:")), encoding="utf-8")
    return issue


def _get(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
            "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\r\n").encode()


def _settings(folder: Path, tracking: bool) -> Path:
    config = folder / "newsletter.toml"
    config.write_text(EXAMPLE_SETTINGS.read_text(encoding="utf-8")
                      + ("\n[tracking]\nclicks = true\n" if tracking else ""), encoding="utf-8")
    return config


def redirect_rows(n: int, repeat: int) -> list[Row]:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = _settings(folder, True)
        port = free_port()
        env = child_env(NEWSLETTER_CONFIG=str(config), NEWSLETTER_STATE=str(folder / "state"),
                        NEWSLETTER_OUTBOX=str(folder / "outbox"), NEWSLETTER_SECRET=SECRET)
        log = open(folder / "server.log", "wb")
        proc = subprocess.Popen([python(), "-m", "uvicorn", "newsletter_mailer.web:app", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    asyncio.run(_load(port, [STYLE], b"200"))
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError((folder / "server.log").read_text())
                    time.sleep(0.1)
            from newsletter_mailer.settings import load_settings

            state = State(folder / "state")
            list_id = state.list_ids(load_settings(config)[0])[0]
            store = state.audience()
            clicks.store_links(store.db, SLUG, LINKS)
            store.close()
            codes = [tokens.make_link_code(SECRET.encode(), list_id, SLUG, i, u) for i, u in enumerate(LINKS, 1)]
            rates, gets = [], []
            for rep in range(repeat):  # a new reader each click: every click writes its unique row
                reqs = [_get(f"/c/{codes[i % len(codes)]}."
                             + tokens.make_click_reader(SECRET.encode(), list_id, SLUG, f"r{rep}.{i}@example.org"))
                        for i in range(n)]
                rates.append(asyncio.run(_load(port, reqs, b"302 Found", ok=(b"302",))))
                gets.append(asyncio.run(_load(port, [STYLE] * n, b"200")))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        store = State(folder / "state").audience()
        total = sum(c.clicks for c in clicks.counts(store.db, SLUG))
        store.close()
        assert total == n * repeat, f"{total} clicks counted, expected {n * repeat}"
    ours = median(rates)
    return [Row(f"web: /c/ tracked-link redirects, {CONNECTIONS} keep-alive connections, uvicorn (one process), "
                "store on disk", ours, "requests/s", floor=median(gets), floor_label="same server, GET /style.css",
                goal="≥ 500/s", met=ours >= 500,
                note=f"{n:,} clicks a round, each a new reader committed (keyed hash, link counts, burst check) "
                     "before its 302 to the stored URL")]


def message_rows(n: int, repeat: int) -> list[Row]:
    """Tracked and untracked timed in turn, round after round, and the fastest round of each kept:
    on a shared machine the load moves between rounds, not within one."""
    from newsletter_mailer.send import Options, prepare

    builds, links = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for tracking in (False, True):
            folder = Path(tmp) / str(tracking)
            (folder / "issues").mkdir(parents=True)
            _settings(folder, tracking)
            issue = _issue_for_everyone(folder)
            p = prepare(Options(issue=issue, config=folder / "newsletter.toml", state=folder / "state",
                                outbox=folder / "outbox", provider="outbox", env={"NEWSLETTER_SECRET": SECRET}))
            people = [(f"reader.{i}@example{i % 50}.org", f"Reader {i}", {}) for i in range(n)]

            def build(p=p, messages=p.provider.ctx.messages) -> None:
                for email, name, fields in people:
                    r = p.recipient(email, name, fields)
                    messages.build(r.email, r.name, r.values)

            build()
            builds[tracking] = build
            links = max(links, len(p.composed.tracked_links))
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeat):
            for tracking in (False, True):
                times[tracking] += timed(builds[tracking], 1)
    out = {t: min(v) / n * 1e6 for t, v in times.items()}
    ratio = out[True] / out[False]
    return [Row(f"one complete message as bytes with [tracking] clicks (example issue, {links} links through /c/)",
                out[True], "µs", floor=out[False], floor_label="the same message untracked", goal="≤ 1.2×",
                met=ratio <= 1.2, note=f"fastest of {repeat} interleaved rounds of {n:,}; one reader half a message "
                                       "(two short keyed hashes) for every link, the per-link halves written in "
                                       "once per send")]


def outbox_rows(n: int, repeat: int) -> list[Row]:
    """`newsletter send --provider outbox` to n, whole process, in memory when /dev/shm allows, tracked and not."""
    import shutil

    from _common import run_process, write_subscribers

    where = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        tmp = Path(tmp)
        subs = write_subscribers(tmp / "subscribers.csv", n)
        example = _issue_for_everyone(tmp)
        for tracking in (False, True):
            (tmp / str(tracking)).mkdir()
            _settings(tmp / str(tracking), tracking)
        for rep in range(repeat + 1):  # the first round warms up
            for tracking in ((False, True) if rep % 2 else (True, False)):
                folder = tmp / str(tracking)
                cmd = [python(), "-m", "newsletter_mailer", "send", str(example), "--list", str(subs),
                       "--provider", "outbox", "--outbox", str(folder / "outbox"), "--state", str(folder / "state"),
                       "--config", str(folder / "newsletter.toml"), "--yes"]
                took = run_process(cmd, env=child_env(NEWSLETTER_SECRET=SECRET))
                assert len(list((folder / "outbox" / EXAMPLE_ISSUE.stem).iterdir())) == n
                shutil.rmtree(folder / "outbox")
                shutil.rmtree(folder / "state")
                if rep:
                    times[tracking].append(took)
    ours, floor = median(times[True]), median(times[False])
    return [Row(f"outbox: `newsletter send` to {n:,} with [tracking] clicks, whole process, in memory", ours, "s",
                floor=floor, floor_label="the same send untracked", goal="≤ 1.2×", met=ours / floor <= 1.2,
                note=f"{(ours - floor) / n * 1e6:.1f} µs more a message: its reader half, the links stored once")]


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat = (1000, 3) if args.quick else (5000, 3)
    rows = (message_rows(2000 if args.quick else 10000, 9) + outbox_rows(2000 if args.quick else 10000, 3)
            + redirect_rows(n, repeat))
    report(rows, args)


if __name__ == "__main__":
    main()
