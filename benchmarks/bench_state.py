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
import time
from contextlib import contextmanager
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, median, python, report, \
    run_process, write_subscribers
from bench_web import SECRET, _load, _post, _server, store_commits

sys.path.insert(0, str(ROOT))
from tests.helpers.postgres import Cluster, bin_dir, query  # noqa: E402

from newsletter_mailer import tokens  # noqa: E402
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


def _ticks(pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (parent, CPU clock ticks)} of `pid` and its descendants, from /proc (Linux)."""
    procs: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime + stime, and cutime + cstime: the children it reaped (a backend that has exited)
            procs[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in procs.items() if parent in tree} - tree
        grew, tree = bool(more), tree | more
    return {p: procs[p] for p in tree if p in procs}


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process tree that is still alive (the server, PostgreSQL)."""
    return sum(t for _, t in _ticks(pid).values()) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """Who used the CPU during a stretch of wall time: this process (the client), the server's
    processes and PostgreSQL's, in seconds; the rest of the machine's two cores is other work."""

    def __init__(self, server: int, postgres: int):
        self.pids = {"server": server, "postgres": postgres}
        self.used = {"client": 0.0, "server": 0.0, "postgres": 0.0}
        self.wall = 0.0
        self.items = 0

    def measure(self, fn, items: int):
        before = {k: cpu_seconds(p) for k, p in self.pids.items()}
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        self.wall += time.perf_counter() - t0
        self.items += items
        self.used["client"] += time.process_time() - c0
        for k, p in self.pids.items():
            self.used[k] += cpu_seconds(p) - before[k]
        return out

    def shares(self) -> str:
        cores = self.wall * (os.cpu_count() or 1)
        return ", ".join(f"{k} {v / cores:.0%} ({v / self.items * 1e3:.2f} ms each)" for k, v in self.used.items()) \
            + f" of {os.cpu_count()} cores' time"


@contextmanager
def no_flush_wait():
    """Connections opened inside commit without waiting for the WAL to reach the disk (libpq's
    PGOPTIONS): the floor's loop again, to show what its commit's flush costs."""
    before = os.environ.get("PGOPTIONS")
    os.environ["PGOPTIONS"] = "-c synchronous_commit=off"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PGOPTIONS"]
        else:
            os.environ["PGOPTIONS"] = before


def postmaster(cluster: Cluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def serve_rate(folder: Path, workers: int, n: int, repeat: int, between=None, cpu_of: int | None = None,
               **env: str) -> tuple[list[float], Cpu | None]:
    """POSTs/s of `repeat` rounds of n one-click POSTs, each to a new address, on one server;
    `between(rep)` runs after each round, the server idle; with cpu_of (PostgreSQL's postmaster),
    who used the CPU during the rounds."""
    proc, port, list_id = _server(folder, workers, **env)
    rates = []
    cpu = Cpu(proc.pid, cpu_of) if cpu_of is not None else None
    try:
        for rep in range(repeat):
            toks = [tokens.make_unsubscribe(SECRET.encode(), list_id, f"r{rep}.{i}@example.org", "2020-09-cscp")
                    for i in range(n)]
            requests = [_post(t) for t in toks]

            def load():
                return asyncio.run(_load(port, requests, b"You are unsubscribed"))
            rates.append(cpu.measure(load, n) if cpu is not None else load())
            if between is not None:
                between(rep)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rates, cpu


def stored_unsubscribes(state: Path, url: str | None) -> int:
    store = State(state, url).audience()
    try:
        return sum(1 for e in store.rows("unsubscribed") if e.issue == "2020-09-cscp")
    finally:
        store.close()


def web_rows(cluster: Cluster, n: int, repeat: int) -> list[Row]:
    """4 workers on PostgreSQL against the floor: PostgreSQL's own commits of the same statement
    (Audience.record of one unsubscribe a transaction, what each POST does) from one client in a
    loop, a round of it after each round of POSTs, on the same database. Then, for the notes,
    one process on SQLite and one on PostgreSQL."""
    env = child_env()
    env.pop("NEWSLETTER_DATABASE_URL", None)
    rates: dict[str, list[float]] = {}
    floor: list[float] = []
    unflushed: list[float] = []
    floor_cpu = Cpu(os.getpid(), postmaster(cluster))  # client = this process; "server" counts it again
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers, backend in (("pg4", 4, "postgres"), ("sqlite1", 1, "sqlite"), ("pg1", 1, "postgres")):
            folder = Path(tmp) / name
            folder.mkdir()
            url = fresh_database(cluster, env) if backend == "postgres" else None
            extra = {"NEWSLETTER_DATABASE_URL": url} if url else {}
            def floor_round(rep: int, url=url, folder=folder) -> None:
                floor.append(floor_cpu.measure(lambda: store_commits(folder / "raw", n, url, f"floor{rep}"), n))
                with no_flush_wait():  # what the commit's wait for the WAL on disk costs the floor
                    unflushed.append(store_commits(folder / "raw", n, url, f"unflushed{rep}"))
            pg4 = name == "pg4"
            rates[name], cpu = serve_rate(folder, workers, n, repeat, floor_round if pg4 else None,
                                          postmaster(cluster) if pg4 else None, **extra)
            if cpu is not None:
                pg4_cpu = cpu
            stored = stored_unsubscribes(folder / "state", url)
            expected = n * repeat * (3 if name == "pg4" else 1)  # pg4's database also holds the floors' rows
            assert stored == expected, f"{stored} unsubscribes in the {backend} store, expected {expected}"
    (pg4, lite, pg1), base = (median(rates[k]) for k in ("pg4", "sqlite1", "pg1")), median(floor)
    del floor_cpu.used["server"]
    return [Row("state: one-click unsubscribe POSTs, 8 keep-alive connections, `uvicorn --workers 4`, store on "
                "PostgreSQL (local, fsync on), against PostgreSQL's own commits of the same statement from one "
                "client", pg4, "requests/s", floor=base,
                floor_label="Audience.record of one unsubscribe a transaction, in a loop, same database",
                goal="≥ 0.5× the floor", met=pg4 / base >= 0.5,
                note=f"{n:,} POSTs a round, each a new address committed before its 200, a floor round after each "
                     f"(POSTs " + ", ".join(f"{r:,.0f}" for r in rates["pg4"]) + "/s; floor "
                     + ", ".join(f"{r:,.0f}" for r in floor) + "/s); CPU during the POSTs: "
                     f"{pg4_cpu.shares()}; during the floor: {floor_cpu.shares()}; the floor with "
                     f"synchronous_commit=off (no wait for the WAL on disk) {median(unflushed):,.0f}/s; "
                     "one process on PostgreSQL "
                     f"{pg1:,.0f}/s, on SQLite {lite:,.0f}/s")]


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
