"""Scale: a generated 1,000,000-row subscribers CSV read, checked and deduplicated
(iterating SubscriberList, as each pass of a send does): seconds and peak RSS, each in its own
process, against the floor: email-validator alone over the same addresses (the csv module
reading the file, validate_email on each address, nothing else).

python benchmarks/bench_subscribers.py [--quick] [--json FILE]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import Row, child_env, cli, measure_process, python, report, write_subscribers

OURS = r"""
import sys, time
from newsletter_mailer.subscribers import SubscriberList
t0 = time.perf_counter()
n = 0
subs = SubscriberList(sys.argv[1])
for s in subs:
    n += 1
print(n, time.perf_counter() - t0)
"""

FLOOR = r"""
import csv, sys, time
from email_validator import validate_email
t0 = time.perf_counter()
n = 0
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = csv.reader(f)
    next(rows)
    for row in rows:
        validate_email(row[0], check_deliverability=False, allow_smtputf8=False)
        n += 1
print(n, time.perf_counter() - t0)
"""


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 100_000 if args.quick else 1_000_000
    env = child_env()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_subscribers(Path(tmp) / "subscribers.csv", n)
        size = path.stat().st_size
        _, ours_rss, ours_out = measure_process([python(), "-c", OURS, str(path)], env=env)
        _, floor_rss, floor_out = measure_process([python(), "-c", FLOOR, str(path)], env=env)
    ours_n, ours_s = ours_out.split()
    floor_n, floor_s = floor_out.split()
    assert int(ours_n) == int(floor_n) == n, (ours_n, floor_n, n)
    ours_s, floor_s = float(ours_s), float(floor_s)
    rows = [
        Row(f"subscribers CSV, {n:,} rows: read, validate, deduplicate", ours_s, "s", floor=floor_s,
            floor_label="email-validator alone", goal="≤ 1.3× email-validator alone",
            met=ours_s / floor_s <= 1.3,
            note=f"{size / 2**20:.0f} MiB file; {n / ours_s:,.0f} rows/s; floor peak RSS {floor_rss:.0f} MiB"),
        Row(f"subscribers CSV, {n:,} rows: peak RSS", ours_rss, "MiB", goal="≤ 300 MB",
            met=ours_rss * 2**20 <= 300e6, note="the set of addresses seen (for dedupe) is what grows"),
    ]
    report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
