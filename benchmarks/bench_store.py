"""The audience store's cost on a send: the real send's plan and recipient loop (every link
sealed for the app, every batch asked "who left since?") over a generated 1,000,000-row list,
without a store and with one holding 100,000 suppressions, side by side, each in its own
process. Nothing is written: the seam is Sender.plan() and the batches run() would hand to
the provider (a dry run, so no ledger), which is where the store is asked.

python benchmarks/bench_store.py [--quick] [--json FILE]
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, measure_process, python, report, \
    write_subscribers

SEND = r"""
import sys, time
from pathlib import Path
from newsletter_mailer.send import Options, Sender, _chunks, prepare
t0 = time.perf_counter()
o = Options(issue=Path(sys.argv[1]), list_path=Path(sys.argv[2]), config=Path(sys.argv[3]),
            state=Path(sys.argv[4]), provider="outbox", dry_run=True, env={"NEWSLETTER_SECRET": "fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY"})
sender = Sender(prepare(o))
plan = sender.plan()
n = left = 0
for _, batch in _chunks(sender._recipients(plan), sender.p.provider.batch_size):
    batch, gone = sender.audience.still_wanted(batch)
    n += len(batch)
    left += gone
sender.close()
print(n, plan.to_send, time.perf_counter() - t0)
"""


def _config(folder: Path) -> Path:
    text = re.sub(r"(?m)^unsubscribe_(url|one_click) = .*\n", "", EXAMPLE_SETTINGS.read_text(encoding="utf-8"))
    path = folder / "newsletter.toml"
    path.write_text(text, encoding="utf-8")  # the example's own [web] base_url: the app's token links
    return path


def _store(state: Path, every: int, n: int) -> int:
    """Suppress every `every`-th reader of the list (those write_subscribers makes)."""
    from newsletter_mailer.audience.store import Change
    from newsletter_mailer.state import State

    store = State(state).audience()
    changes = [Change(f"reader.{i}@example{i % 50}.org", ("unsubscribed", "bounced", "complained")[i % 3],
                      "one-click") for i in range(0, n, every)]
    store.record(changes)
    store.close()
    return len(changes)


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 100_000 if args.quick else 1_000_000
    env = child_env()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv, config = write_subscribers(tmp / "subscribers.csv", n), _config(tmp)
        plain, stored = tmp / "plain", tmp / "stored"
        plain.mkdir()
        suppressed = _store(stored, 10, n)
        runs = {}
        for name, state in (("plain", plain), ("stored", stored)):
            _, rss, out = measure_process([python(), "-c", SEND, str(EXAMPLE_ISSUE), str(csv), str(config),
                                           str(state)], env=env, cwd=tmp)
            sent, planned, secs = out.split()
            runs[name] = (int(sent), float(secs), rss)
    assert runs["plain"][0] == n and runs["stored"][0] == n - suppressed, runs
    plain_s, stored_s = runs["plain"][1], runs["stored"][1]
    per_row = lambda s: s / n * 1e6  # noqa: E731
    rows = [
        Row(f"send plan + recipients, {n:,} rows, store with {suppressed:,} suppressions", stored_s, "s",
            floor=plain_s, floor_label="the same send without a store", goal="≤ 1.10× without the store",
            met=stored_s / plain_s <= 1.10,
            note=f"{per_row(stored_s):.1f} µs a row vs {per_row(plain_s):.1f}; one store query per batch of "
                 f"100; peak RSS {runs['stored'][2]:.0f} vs {runs['plain'][2]:.0f} MiB"),
    ]
    report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
