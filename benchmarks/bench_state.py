"""Shared state on PostgreSQL against the SQLite files, side by side in one run:
`newsletter send --provider outbox` to 100,000 as a whole process (the outbox and the state on
the temp folder's disk) with the ledger on PostgreSQL (a fresh database after `newsletter state
init`) against the same send with SQLite; then one-click POSTs per second with
`uvicorn newsletter_mailer.web:app --workers 4` on PostgreSQL against one process on SQLite
(bench_web.py's server and client).

PostgreSQL is a throwaway cluster of Debian's binaries (tests/helpers/postgres.py) in the temp
folder, run with its defaults for durability (fsync on, synchronous_commit on: a COMMIT waits for
the WAL to reach the disk), unlike the tests' fsync=off; it is stopped at the end.

python benchmarks/bench_state.py [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, median, python, report, \
    run_process, write_subscribers
from bench_web import SECRET, _load, _post, _server

sys.path.insert(0, str(ROOT))
from tests.helpers.postgres import Cluster, bin_dir, query  # noqa: E402

from newsletter_mailer import tokens  # noqa: E402
from newsletter_mailer.audience.store import Audience  # noqa: E402
from newsletter_mailer.state import State


class DurableCluster(Cluster):
    """The tests' cluster with PostgreSQL's own durability settings (the tests turn fsync off)."""

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")


def fresh_database(cluster: Cluster, env: dict[str, str]) -> str:
    """A new database with the schema made by `newsletter state init`; its URL."""
    url = cluster.new_database()
    run_process([python(), "-m", "newsletter_mailer", "state", "init", "--config", str(EXAMPLE_SETTINGS)],
                env=dict(env, NEWSLETTER_DATABASE_URL=url))
    return url


def send_rows(cluster: Cluster, n: int, repeat: int) -> list[Row]:
    """The same outbox send with the ledger in SQLite and in PostgreSQL, in turn (A B B A …)."""
    env = child_env(NEWSLETTER_SECRET=SECRET)
    env.pop("NEWSLETTER_DATABASE_URL", None)
    times: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lists = {size: write_subscribers(tmp / f"subscribers-{size}.csv", size) for size in (1000, n)}

        def send(backend: str, size: int) -> float:
            out, state = tmp / "outbox", tmp / "state"
            run_env = dict(env, NEWSLETTER_DATABASE_URL=fresh_database(cluster, env)) if backend == "postgres" else env
            os.sync()
            took = run_process([python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list",
                                str(lists[size]), "--provider", "outbox", "--outbox", str(out), "--state", str(state),
                                "--config", str(EXAMPLE_SETTINGS), "--yes"], env=run_env)
            files = sum(1 for _ in (out / EXAMPLE_ISSUE.stem).iterdir())
            assert files == size, f"{files} files in the outbox, expected {size}"
            if backend == "postgres":
                sent = query(run_env["NEWSLETTER_DATABASE_URL"], "SELECT count(*) FROM deliveries WHERE status='sent'")
                assert sent == [(size,)], f"{sent} sent rows in the PostgreSQL ledger, expected {size}"
            shutil.rmtree(out)
            shutil.rmtree(state, ignore_errors=True)  # none on PostgreSQL (the secret is in the env)
            return took

        for backend in times:  # warm-up: the interpreter's and the libraries' files in the page cache
            send(backend, 1000)
        for rep in range(repeat):
            for backend in (("sqlite", "postgres") if rep % 2 == 0 else ("postgres", "sqlite")):
                times[backend].append(send(backend, n))
    pg, lite = median(times["postgres"]), median(times["sqlite"])
    return [Row(f"state: `newsletter send --provider outbox` to {n:,}, whole process, outbox on disk, "
                "ledger and store on PostgreSQL (local, fsync on)", pg, "s", floor=lite,
                floor_label="the same send on SQLite", goal="≤ 1.5× SQLite", met=pg / lite <= 1.5,
                note=f"{n / pg:,.0f} against {n / lite:,.0f} messages/s; PostgreSQL adds "
                     f"{(pg - lite) / n * 1e6:.0f} µs a message; runs PostgreSQL "
                     + ", ".join(f"{t:.1f}" for t in times["postgres"]) + " s, SQLite "
                     + ", ".join(f"{t:.1f}" for t in times["sqlite"]) + " s")]


def serve_rate(folder: Path, workers: int, n: int, repeat: int, **env: str) -> list[float]:
    """POSTs/s of `repeat` rounds of n one-click POSTs, each to a new address, on one server."""
    proc, port, list_id = _server(folder, workers, **env)
    rates = []
    try:
        for rep in range(repeat):
            toks = [tokens.make_unsubscribe(SECRET.encode(), list_id, f"r{rep}.{i}@example.org", "2020-09-cscp")
                    for i in range(n)]
            rates.append(asyncio.run(_load(port, [_post(t) for t in toks], b"You are unsubscribed")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rates


def stored_unsubscribes(state: Path, url: str | None) -> int:
    store = State(state, url).audience()
    try:
        return sum(1 for e in store.rows("unsubscribed") if e.issue == "2020-09-cscp")
    finally:
        store.close()


def web_rows(cluster: Cluster, n: int, repeat: int) -> list[Row]:
    """4 workers on PostgreSQL, 1 worker on SQLite (the figure to double), 1 worker on PostgreSQL."""
    env = child_env()
    env.pop("NEWSLETTER_DATABASE_URL", None)
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers, backend in (("pg4", 4, "postgres"), ("sqlite1", 1, "sqlite"), ("pg1", 1, "postgres")):
            folder = Path(tmp) / name
            folder.mkdir()
            extra = {"NEWSLETTER_DATABASE_URL": fresh_database(cluster, env)} if backend == "postgres" else {}
            rates[name] = serve_rate(folder, workers, n, repeat, **extra)
            stored = stored_unsubscribes(folder / "state", extra.get("NEWSLETTER_DATABASE_URL"))
            assert stored == n * repeat, f"{stored} unsubscribes in the {backend} store, expected {n * repeat}"
    pg4, lite, pg1 = (median(rates[k]) for k in ("pg4", "sqlite1", "pg1"))
    return [Row("state: one-click unsubscribe POSTs, 8 keep-alive connections, `uvicorn --workers 4`, store on "
                "PostgreSQL (local, fsync on)", pg4, "requests/s", floor=lite,
                floor_label="one process, store on SQLite", goal="≥ 2× SQLite's one process", met=pg4 / lite >= 2,
                note=f"{n:,} POSTs a round, each a new address committed before its 200; one process on "
                     f"PostgreSQL {pg1:,.0f}/s; {os.cpu_count()} cores for the client, the workers and PostgreSQL")]


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, posts, repeat = (10_000, 1000, 3) if args.quick else (100_000, 5000, 3)
    binaries = bin_dir()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run .ci/install-system.sh")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    cluster = DurableCluster(binaries).start()
    try:
        rows = send_rows(cluster, n, repeat) + web_rows(cluster, posts, repeat)
    finally:
        cluster.stop()
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    report(rows, args)


if __name__ == "__main__":
    main()
