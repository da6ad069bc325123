"""Scale: 10,000 bounce messages (RFC 3464 reports, each matched to its recipient and issue
through the ledger's Message-ID) read from a Maildir and recorded in the audience store by
`newsletter inbox --maildir`, whole process; a second run that finds everything already recorded.

python benchmarks/bench_inbox.py [--quick] [--json FILE]
"""

from __future__ import annotations

import mailbox
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from _common import EXAMPLE_SETTINGS, Row, child_env, cli, measure_process, python, report
from newsletter_mailer.state import State

DSN = """From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r
To: news@example.org\r
Subject: Undelivered Mail Returned to Sender\r
Message-ID: <dsn-{i}@mx.example.net>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r
\r
--B\r
Content-Type: text/plain\r
\r
The mail system could not deliver your message.\r
\r
--B\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.net\r
\r
Final-Recipient: rfc822; reader{i}@example.com\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 user unknown\r
\r
--B\r
Content-Type: text/rfc822-headers\r
\r
From: News <news@example.org>\r
To: reader{i}@example.com\r
Message-ID: <m{i}@example.org>\r
\r
--B--\r
"""


def build(folder: Path, n: int) -> None:
    shutil.copy(EXAMPLE_SETTINGS, folder / "newsletter.toml")
    state = folder / ".newsletter"

    State(state).ledger().close()  # the ledger's own schema, made as a send makes it
    db = sqlite3.connect(state / "ledger.sqlite3")
    db.executemany("INSERT INTO deliveries (issue, email, status, message_id, updated_at) VALUES "
                   "('2020-09', ?, 'sent', ?, '2020-09-01')",
                   ((f"reader{i}@example.com", f"<m{i}@example.org>") for i in range(n)))
    db.commit()
    db.close()
    box = mailbox.Maildir(folder / "bounces", create=True)
    for i in range(n):
        box.add(DSN.format(i=i).encode())


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 1_000 if args.quick else 10_000
    env = child_env()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, n)
        cmd = [python(), "-m", "newsletter_mailer", "inbox", "--maildir", str(folder / "bounces"),
               "--config", str(folder / "newsletter.toml")]
        first, rss, out = measure_process(cmd, env=env)
        assert f"recorded: {n} bounced" in out, out
        second, _, out2 = measure_process(cmd, env=env)
        assert f"already recorded: {n}" in out2, out2
    rows = [
        Row(f"inbox: {n:,} bounces read from a Maildir and recorded", first, "s", goal="≤ 30 s",
            met=first <= 30, note=f"{n / first:,.0f} messages/s; peak RSS {rss:.0f} MiB"),
        Row(f"inbox: the same {n:,} again (all already recorded)", second, "s",
            note="each message read and hashed, nothing classified"),
    ]
    report(rows, args)


if __name__ == "__main__":
    sys.exit(main())
