"""SendGrid suppressions sync: 100,000 bounces pulled from a local server (its own process,
tests/helpers/sendgrid_api.py, answering pages of 500 as SendGrid does) into a fresh audience
store on disk: seconds and the syncing process's peak RSS, beside the same sync of a tenth as
many (flat memory: the peak must not grow with the list).

python benchmarks/bench_sync.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from _common import EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, measure_process, python, report
from newsletter_mailer.state import State


def child(url: str) -> None:
    """Runs in the measured process: one sync into a store in a temporary folder."""
    import tempfile
    from pathlib import Path

    from newsletter_mailer.audience.sendgrid_sync import sync
    from newsletter_mailer.settings import load_settings

    from tests.helpers.sendgrid_api import KEY

    settings = load_settings(EXAMPLE_SETTINGS)[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = State(Path(tmp)).audience()
        t0 = time.perf_counter()
        report = sync(settings, store, {"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": url})
        total = time.perf_counter() - t0
        bounced = store.db.execute("SELECT count(*) FROM audience WHERE status='bounced'").fetchone()[0]
        store.close()
    print(json.dumps({"total": total, "changed": report.changed, "bounced": bounced}))


def one(n: int) -> tuple[float, float, dict]:
    server = subprocess.Popen([python(), "-m", "tests.helpers.sendgrid_api", str(n)], cwd=ROOT, env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        wall, rss, out = measure_process([python(), __file__, "--child", url], cwd=ROOT,
                                         env=child_env(PYTHONPATH=f"{ROOT / 'src'}:{ROOT}"))
    finally:
        server.communicate(timeout=60)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["bounced"] == n == r["changed"], r
    return wall, rss, r


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 10_000 if args.quick else 100_000
    _, small_rss, _ = one(n // 10)
    wall, rss, r = one(n)
    rows = [
        Row(f"SendGrid sync: {n:,} bounces from a local server into the audience store", r["total"], "s",
            goal="≤ 10 s for 100,000", met=r["total"] * (100_000 / n) <= 10,
            note=f"{n // 500:,} pages of 500, one transaction each; whole process {wall:.1f} s"),
        Row(f"SendGrid sync: peak RSS of the syncing process ({n:,} bounces)", rss, "MiB",
            floor=small_rss, floor_label=f"the same sync of {n // 10:,}", goal="flat (≤ 1.2× a tenth as many)",
            met=rss <= 1.2 * small_rss),
    ]
    report(rows, args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
