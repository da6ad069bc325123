"""Content for each audience: an issue with 8 variants (three sections each for one tag: parents,
practitioners, schools) against the same issue without conditions, sent to 100,000 readers
through the outbox, in-process (the real prepare, Sender.plan and Sender.run, SQLite ledger,
one .eml a reader, in memory on tmpfs when there is room).

- compose: the conditional issue composed for its 8 variants (and the web copy) vs one compose
  of the issue without conditions (goal ≤ 8×);
- per message: the plan and the run over the list, divided by the readers (goal ≤ 1.1×).

python benchmarks/bench_variants.py [--quick] [--json FILE]
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, cli, median, report

TAGS = ("parents", "practitioners", "schools")
SECRET = "fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY"


def issues(folder: Path) -> tuple[Path, Path]:
    """The example with three sections for one tag each (8 variants), and the same without."""
    (folder / "issues").mkdir(parents=True)
    shutil.copy(EXAMPLE_SETTINGS, folder / "newsletter.toml")
    plain = re.sub(r"\n    for: \{[^}]*\}", "", EXAMPLE_ISSUE.read_text(encoding="utf-8"))
    headings = re.findall(r'\n  - heading: "[^"]*"\n', plain)
    conditional = plain
    for heading, tag in zip(headings[1:4], TAGS):
        conditional = conditional.replace(heading, heading + f"    for: {{tags: [{tag}]}}\n", 1)
    (folder / "issues" / "plain.yaml").write_text(plain, encoding="utf-8")
    (folder / "issues" / "audiences.yaml").write_text(conditional, encoding="utf-8")
    return folder / "issues" / "plain.yaml", folder / "issues" / "audiences.yaml"


def readers(path: Path, n: int) -> Path:
    """n readers, each of the 8 mixes of the three tags in turn."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Email", "Name", "Tags", "School Year"])
        for i in range(n):
            tags = ";".join(t for b, t in enumerate(TAGS) if i >> b & 1)
            w.writerow([f"reader.{i}@example{i % 50}.org", f"Reader {i}", tags, ("Year 7", "")[i % 2]])
    return path


def compose_cost(issue: Path, repeat: int) -> tuple[float, int]:
    """Median seconds to compose the issue for every variant its readers can get (one compose
    when it has no conditions), warm; and how many variants."""
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings
    from newsletter_mailer.variants import Editions

    settings, settings_dir = load_settings(issue.parents[1] / "newsletter.toml")
    times, count = [], 0
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        editions = Editions(compose(issue, settings, settings_dir), settings_dir)
        variants = editions.audiences.possible()
        for v in variants:
            editions.composed(v)
        times.append(time.perf_counter() - t0)
        count = len(variants)
    return median(times[1:]), count


def send(issue: Path, subs: Path, tmp: Path) -> tuple[float, int]:
    """Seconds of the plan and the run (the per-message part of a send), and messages written."""
    from newsletter_mailer.send import Options, Sender, prepare

    out, state = tmp / "outbox", tmp / "state"
    p = prepare(Options(issue=issue, list_path=subs, provider="outbox", outbox=out, state=state,
                        config=issue.parents[1] / "newsletter.toml", env={"NEWSLETTER_SECRET": SECRET}))
    for v in p.editions.audiences.possible():  # composed before the clock starts (measured above)
        p.editions.composed(v)
    sender = Sender(p)
    try:
        t0 = time.perf_counter()
        summary = sender.run(sender.plan())
        took = time.perf_counter() - t0
    finally:
        sender.close()
    written = sum(1 for _ in os.scandir(out / issue.stem))
    assert summary.sent == written, (summary.sent, written)
    shutil.rmtree(out)
    shutil.rmtree(state)
    return took, written


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat = (5000, 3) if args.quick else (100_000, 3)
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and shutil.disk_usage(shm).free > 12 * 2**30 else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        tmp = Path(tmp)
        plain, conditional = issues(tmp / "nl")
        subs = readers(tmp / "readers.csv", n)
        one, _ = compose_cost(plain, 5)
        eight, variants = compose_cost(conditional, 5)
        times: dict[str, list[float]] = {"plain": [], "audiences": []}
        for rep in range(repeat):
            for name, issue in ((("plain", plain), ("audiences", conditional)) if rep % 2 else
                                (("audiences", conditional), ("plain", plain))):
                took, written = send(issue, subs, tmp)
                assert written == n
                times[name].append(took)
    per_plain, per_aud = median(times["plain"]) / n * 1e6, median(times["audiences"]) / n * 1e6
    place = "in memory (tmpfs)" if where else "on disk"
    rows = [
        Row(f"audiences: compose of an issue with {variants} variants (each composed once, and the web copy) vs one "
            "compose of the same issue without conditions, warm", eight * 1000, "ms", one * 1000,
            "(one compose)", f"≤ {variants}× one compose", eight <= variants * one),
        Row(f"audiences: per message, `send` plan + run to {n:,} readers through the outbox {place}, "
            f"{variants} variants vs none — {per_plain:.1f} µs a message without", per_aud, "µs", per_plain,
            "(the issue without conditions)", "≤ 1.1×", per_aud <= 1.1 * per_plain),
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
