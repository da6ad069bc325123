"""SendGrid: 1,000,000 recipients' mail/send payloads built by the provider and posted to a
local HTTP server (its own process) that answers 202: seconds (all, and building the payloads
alone), requests made, and the sending process's peak RSS.

Recipients are made as the send makes them (make_recipient: merge values and the HMAC
unsubscribe link) from a stream of addresses, a batch of 1,000 at a time; the list is never
held in memory. The provider builds each request (plain dicts, json by python_http_client)
and posts it over loopback; the ledger and the CSV are measured elsewhere.

python benchmarks/bench_sendgrid.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH, EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, free_port, measure_process, \
    python, report


def child(n: int, port: int) -> None:
    """Runs in the measured process: send n recipients through the SendGrid provider."""
    import tempfile

    from newsletter_mailer.send import Options, prepare

    with tempfile.TemporaryDirectory() as tmp:
        env = {"NEWSLETTER_SECRET": "fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY", "SENDGRID_API_KEY": "SG.benchmark-not-a-key",
               "SENDGRID_API_HOST": f"http://127.0.0.1:{port}"}
        p = prepare(Options(issue=EXAMPLE_ISSUE, config=EXAMPLE_SETTINGS, state=Path(tmp), provider="sendgrid",
                            env=env))
        provider = p.provider
        building = 0.0
        payload = provider.payload

        def timed_payload(batch):
            nonlocal building
            t0 = time.perf_counter()
            out = payload(batch)
            building += time.perf_counter() - t0
            return out

        provider.payload = timed_payload
        t0 = time.perf_counter()
        provider.open()
        sent = making = 0
        size = provider.batch_size
        for start in range(0, n, size):
            t1 = time.perf_counter()
            batch = [p.recipient(f"reader.{i}@example{i % 50}.org", f"Reader {i}", {})
                     for i in range(start, min(start + size, n))]
            making += time.perf_counter() - t1
            sent += sum(r.ok for r in provider.send(batch))
        provider.close()
        total = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "total": total, "building": building, "making": making}))


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 100_000 if args.quick else 1_000_000
    port = free_port()
    server = subprocess.Popen([python(), str(BENCH / "_http_202.py"), str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        wall, rss, out = measure_process([python(), __file__, "--child", str(n), str(port)], env=child_env())
    finally:
        requests, body_bytes = map(int, server.communicate(timeout=60)[0].split())
    r = json.loads(out.strip().splitlines()[-1])
    assert r["sent"] == n, f"{r['sent']} of {n} accepted"
    expected_requests = -(-n // 1000)
    rows = [
        Row(f"SendGrid: {n:,} recipients' payloads built (provider.payload)", r["building"], "s",
            goal="≤ 5 s for 1,000,000", met=r["building"] * (1_000_000 / n) <= 5,
            note=f"{r['building'] / n * 1e6:.1f} µs a recipient; make_recipient {r['making']:.1f} s more"),
        Row(f"SendGrid: {n:,} recipients built and posted to a local 202 server", r["total"], "s",
            goal=f"{expected_requests:,} requests", met=requests == expected_requests,
            note=f"{requests:,} requests, {body_bytes / 2**20:,.0f} MiB of JSON; whole process {wall:.1f} s"),
        Row(f"SendGrid: peak RSS of the sending process ({n:,} recipients)", rss, "MiB",
            goal="≤ 100 MB", met=rss * 2**20 <= 100e6),
    ]
    report(rows, args)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
