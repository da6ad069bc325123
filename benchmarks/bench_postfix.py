"""Delivery through a real relay: a private Postfix (tests/helpers/postfix.py: its own queue on the
temp folder's disk, loopback, mail delivered to a Maildir), run as root.

* ours: `newsletter send --provider smtp --yes` to 1,000 as a whole process, with
  `SMTP_CONNECTIONS=4` and with one connection, in turn;
* floor: a raw smtplib loop of our pre-built messages over one connection to the same Postfix.

Each run ends when Postfix has taken every message (it has written each to its queue and said
250); the next starts once it has delivered them all, so the runs do not overlap.

python benchmarks/bench_postfix.py [--quick] [--json FILE]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, median, python, report, \
    run_process, write_subscribers
from bench_smtp import SECRET, prepared, raw_smtplib

sys.path.insert(0, str(ROOT))
from tests.helpers import postfix  # noqa: E402


def drained(relay: postfix.Postfix, n: int) -> None:
    """Wait until Postfix delivered the n messages of the last run; then empty its Maildir."""
    got = len(relay.wait_delivered(n, timeout=600))
    assert got == n, f"Postfix delivered {got} messages, expected {n}: {relay.log()[-1000:]}"
    for f in relay.delivered():
        f.unlink()


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    if not postfix.available():
        raise SystemExit("needs Postfix and root: run .ci/install-system.sh as root, then this as root")
    n, repeat = (300, 2) if args.quick else (1000, 3)
    relay = postfix.start(domains=", ".join(f"example{i}.org" for i in range(50)))
    times: dict[str, list[float]] = {"4": [], "1": [], "raw": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            subs = write_subscribers(tmp / "subscribers.csv", n)
            p, recipients = prepared(subs, tmp / "prep")
            messages = [(r.email, p.provider.ctx.messages.build(r.email, r.name, r.values)[1]) for r in recipients]
            for rep in range(repeat):
                for kind in (("4", "1", "raw") if rep % 2 == 0 else ("raw", "1", "4")):  # in turn
                    if kind == "raw":
                        times[kind].append(raw_smtplib(relay.port, p.composed.settings.from_email, messages))
                    else:
                        env = child_env(NEWSLETTER_SECRET=SECRET, SMTP_HOST="127.0.0.1", SMTP_PORT=str(relay.port),
                                        SMTP_SECURITY="none", SMTP_CONNECTIONS=kind)
                        times[kind].append(run_process(
                            [python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list", str(subs),
                             "--provider", "smtp", "--state", str(tmp / "state"), "--config", str(EXAMPLE_SETTINGS),
                             "--yes"], env=env))
                        shutil.rmtree(tmp / "state")
                    drained(relay, n)
    finally:
        relay.stop()
    four, one, raw = (n / median(times[k]) for k in ("4", "1", "raw"))
    runs = "; ".join(f"{label} " + ", ".join(f"{t:.1f}" for t in times[k]) + " s"
                     for k, label in (("4", "4 connections"), ("1", "1 connection"), ("raw", "raw smtplib")))
    report([Row(f"SMTP through a real Postfix (local, queue on disk): `newsletter send` to {n:,} (whole process) "
                "with `connections = 4` vs 1", four, "messages/s", floor=one, floor_label="1 connection",
                note=runs),
            Row(f"SMTP through a real Postfix: `newsletter send` to {n:,} on one connection vs a raw smtplib loop "
                "of pre-built messages", one, "messages/s", floor=raw, floor_label="raw smtplib, one connection",
                goal="within 1.5× of raw smtplib", met=raw / one <= 1.5,
                note="Postfix writes each message to its queue before its 250")], args)


if __name__ == "__main__":
    main()
