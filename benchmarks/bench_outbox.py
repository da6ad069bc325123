"""Delivery to the outbox: `newsletter send --provider outbox --yes` to 20,000 subscribers, as a
whole process (settings, compose, checks, the list read and checked twice, the SQLite ledger
written before and after each batch, one .eml per recipient, written atomically), against the
disk floor: a plain loop writing 20,000 files of a pre-built message of the same size.
Both in memory (tmpfs, where the figures are steady and show our own work) and on the disk
(the temp folder; on a virtual disk its write-back makes these vary from run to run).

python benchmarks/bench_outbox.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, median, python, report, run_process, \
    write_subscribers


def floor(folder: Path, data: bytes, n: int) -> float:
    folder.mkdir()
    base = str(folder)
    t0 = time.perf_counter()
    for i in range(n):
        with open(os.path.join(base, f"reader.{i}@example.org-{i:08x}.eml"), "wb") as f:
            f.write(data)
    return time.perf_counter() - t0


def measure(where: Path | None, n: int, repeat: int) -> tuple[float, float, int]:
    """(ours, floor) median seconds and the message size, with the files under `where`."""
    env = child_env(NEWSLETTER_SECRET="fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY")
    ours_times, floor_times = [], []
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        tmp = Path(tmp)
        subs = write_subscribers(tmp / "subscribers.csv", n)
        data = b""

        def send() -> None:
            nonlocal data
            out, state = tmp / "outbox", tmp / "state"
            cmd = [python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list", str(subs),
                   "--provider", "outbox", "--outbox", str(out), "--state", str(state),
                   "--config", str(EXAMPLE_SETTINGS), "--yes"]
            ours_times.append(run_process(cmd, env=env))
            files = list((out / EXAMPLE_ISSUE.stem).iterdir())
            assert len(files) == n, f"{len(files)} files in the outbox, expected {n}"
            data = files[0].read_bytes()
            shutil.rmtree(out)
            shutil.rmtree(state)

        def disk() -> None:
            floor_times.append(floor(tmp / "floor", data, n))
            shutil.rmtree(tmp / "floor")

        send()  # a warm-up, which also makes the message the floor writes
        os.sync()
        for rep in range(repeat):
            # Both write ~1.8 GB: each starts with the page cache written back (os.sync, not
            # timed), and the order alternates, so neither pays for the other's dirty pages.
            for step in ((send, disk) if rep % 2 else (disk, send)):
                step()
                os.sync()
        del ours_times[0]
    return median(ours_times), median(floor_times), len(data)


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat = (2000, 3) if args.quick else (20000, 3)
    places: list[tuple[str, Path | None]] = []
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 4 * 2**30:
        places.append(("in memory (tmpfs: our work over the file system's)", shm))
    places.append(("on disk (the temp folder's file system)", None))
    rows = []
    for label, where in places:
        ours, base, size = measure(where, n, repeat)
        on_disk = where is None  # the goal is against the disk; tmpfs shows our own work
        rows.append(Row(f"outbox: `newsletter send` to {n:,}, whole process, ledger included, {label}", ours, "s",
                        floor=base, floor_label="writing the files",
                        goal="≤ 3× the disk floor" if on_disk else "",
                        met=ours / base <= 3 if on_disk else None,
                        note=f"{n / ours:,.0f} messages/s; floor {n / base:,.0f} files/s of {size:,} bytes"
                             + ("" if on_disk else f"; ours adds {(ours - base) / n * 1e6:.0f} µs a message, start-up included")))
    report(rows, args)


if __name__ == "__main__":
    main()
