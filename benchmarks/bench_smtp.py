"""Delivery over SMTP: 2,000 recipients to a local aiosmtpd sink running in its own process.

* ours: `newsletter send --provider smtp --yes` as a whole process (compose, list, ledger, one
  connection, a transaction per message);
* peer: the PyPI tool mailmerge 2.3.0 (in benchmarks/.venv-mailmerge/, made on first use)
  sending the same message (our text and HTML parts, the same personal unsubscribe links) to
  the same list through the same server: mailmerge_server.conf, mailmerge_template.txt and
  mailmerge_database.csv, as its documentation describes;
* floor: a raw smtplib loop sending our pre-built messages over one connection;
* a relay a round trip away: the same sink answering every command 20 ms late, our send with
  `SMTP_CONNECTIONS=8` against the same send with one connection (goal ≥ 6×).

The sink is the same program for all and is restarted for each run (and counts what it got,
and the connections it had).

python benchmarks/bench_smtp.py [--quick] [--json FILE]
"""

from __future__ import annotations

import csv
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

from _common import BENCH, EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, free_port, median, python, \
    report, run_process, venv_python, write_subscribers

SECRET = "fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY"


class SinkProcess:
    def __init__(self, venv_py: Path, latency: float = 0.0):
        self.port = free_port()
        self.sessions = 0
        self.proc = subprocess.Popen([str(venv_py), str(BENCH / "_smtp_sink.py"), str(self.port), str(latency)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"the SMTP sink did not start: {line!r}")

    def stop(self) -> int:
        """Stop the sink; the number of messages it accepted."""
        out, _ = self.proc.communicate(timeout=30)
        count, self.sessions = map(int, out.strip().splitlines()[-1].split())
        return count


def prepared(subs: Path, state: Path):
    """Our send, prepared in-process: the recipients (as the send would make them) and the templates."""
    from newsletter_mailer.send import Options, Sender, prepare

    p = prepare(Options(issue=EXAMPLE_ISSUE, list_path=subs, config=EXAMPLE_SETTINGS, state=state,
                        outbox=state / "outbox", provider="outbox", env={"NEWSLETTER_SECRET": SECRET}))
    subscribers = Sender(p).subscribers
    return p, [p.recipient(s.email, s.name, s.fields) for s in subscribers]


def mailmerge_files(folder: Path, p, recipients, port: int) -> None:
    """mailmerge's three files, for the same message to the same list."""
    c = p.composed
    s = c.settings

    def jinja(t) -> str:  # literal parts kept raw (CSS braces), the unsubscribe link from the CSV
        names = [c.fields[i].name for i in t.slots]
        out = ["{% raw %}" + t.parts[0] + "{% endraw %}"]
        for name, part in zip(names, t.parts[1:]):
            out.append("{{ %s }}" % name)
            out.append("{% raw %}" + part + "{% endraw %}")
        return "".join(out)

    subject = c.subject.fill(c.filler().defaults())
    boundary = "==mailmerge-benchmark=="
    template = (
        f"TO: {{{{ name }}}} <{{{{ email }}}}>\n"
        f"SUBJECT: {subject}\n"
        f"FROM: {s.from_name} <{s.from_email}>\n"
        f"REPLY-TO: {s.reply_to}\n"
        f"List-Unsubscribe: <{{{{ unsubscribe_url }}}}>, <mailto:{s.unsubscribe_mailto}?subject=unsubscribe>\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{jinja(c.text)}\n"
        f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n{jinja(c.html)}\n"
        f"--{boundary}--\n")
    (folder / "mailmerge_template.txt").write_text(template, encoding="utf-8")
    unsub = next(i for i, f in enumerate(c.fields) if f.name == "unsubscribe_url")
    with open(folder / "mailmerge_database.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "unsubscribe_url"])
        for r in recipients:
            w.writerow([r.email, r.name, r.values[unsub]])
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n", encoding="utf-8")


def raw_smtplib(port: int, sender: str, messages: list[tuple[str, bytes]]) -> float:
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for to, data in messages:
            smtp.sendmail(sender, [to], data)
    return time.perf_counter() - t0


LATENCY = 0.020  # seconds a reply: a relay over the internet


def relay(venv_py: Path, subs: Path, n: int, state: Path, repeat: int) -> Row:
    """`newsletter send` to n through a sink answering every command LATENCY late: 8 connections vs 1."""
    times: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(repeat):
        for conns in times:  # in turn, so a busy machine slows both alike
            sink = SinkProcess(venv_py, LATENCY)
            env = child_env(NEWSLETTER_SECRET=SECRET, SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                            SMTP_SECURITY="none", SMTP_CONNECTIONS=str(conns))
            cmd = [python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list", str(subs),
                   "--provider", "smtp", "--state", str(state), "--config", str(EXAMPLE_SETTINGS), "--yes"]
            try:
                times[conns].append(run_process(cmd, env=env))
            finally:
                got = sink.stop()
            assert got == n and sink.sessions == conns, (got, sink.sessions, conns)
            shutil.rmtree(state)
    one, eight = n / median(times[1]), n / median(times[8])
    return Row(f"SMTP through a relay {LATENCY * 1000:.0f} ms a reply away: `newsletter send` to {n:,} (whole "
               "process) with `connections = 8` vs 1", eight, "messages/s", floor=one, floor_label="1 connection",
               goal="≥ 6× one connection", met=eight / one >= 6,
               note=f"8 connections {median(times[8]):.1f} s, 1 connection {median(times[1]):.1f} s "
                    f"(each message waits 4 replies: MAIL, RCPT, DATA, the final dot)")


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat, mm_n = (600, 2, 100) if args.quick else (2000, 3, 2000)
    venv_py = venv_python()
    mailmerge = venv_py.parent / "mailmerge"
    times: dict[str, list[float]] = {"ours": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subs = write_subscribers(tmp / "subscribers.csv", n)
        p, recipients = prepared(subs, tmp / "prep")
        messages = [(r.email, p.provider.ctx.messages.build(r.email, r.name, r.values)[1]) for r in recipients]
        for rep in range(repeat):
            sink = SinkProcess(venv_py)
            env = child_env(NEWSLETTER_SECRET=SECRET, SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                            SMTP_SECURITY="none")
            cmd = [python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list", str(subs),
                   "--provider", "smtp", "--state", str(tmp / "state"), "--config", str(EXAMPLE_SETTINGS), "--yes"]
            try:
                times["ours"].append(run_process(cmd, env=env))
            finally:
                got = sink.stop()
            assert got == n, f"the sink got {got} messages from us, expected {n}"
            shutil.rmtree(tmp / "state")

            sink = SinkProcess(venv_py)
            try:
                times["floor"].append(raw_smtplib(sink.port, p.composed.settings.from_email, messages))
            finally:
                got = sink.stop()
            assert got == n, f"the sink got {got} messages from smtplib, expected {n}"

        # mailmerge: once (it is slow), to the first mm_n of the same list
        mm = tmp / "mailmerge"
        mm.mkdir()
        sink = SinkProcess(venv_py)
        mailmerge_files(mm, p, recipients[:mm_n], sink.port)
        try:
            mm_time = run_process([str(mailmerge), "--no-dry-run", "--no-limit", "--output-format", "raw"], cwd=mm)
        finally:
            got = sink.stop()
        assert got == mm_n, f"the sink got {got} messages from mailmerge, expected {mm_n}"

    ours_rate = n / median(times["ours"])
    floor_rate = n / median(times["floor"])
    mm_rate = mm_n / mm_time
    size = len(messages[0][1])
    rows = [
        Row(f"SMTP: `newsletter send` to {n:,} (whole process) vs mailmerge 2.3.0, same message, same sink",
            ours_rate, "messages/s", floor=mm_rate, floor_label="mailmerge", goal="≥ 10× mailmerge",
            met=ours_rate / mm_rate >= 10,
            note=f"ours {median(times['ours']):.1f} s; mailmerge {mm_time:.1f} s for {mm_n:,} (a connection "
                 f"per message); {size:,}-byte quoted-printable messages"),
        Row(f"SMTP: `newsletter send` to {n:,} vs a raw smtplib loop of pre-built messages, one connection",
            ours_rate, "messages/s", floor=floor_rate, floor_label="raw smtplib",
            goal="within 1.5× of raw smtplib", met=floor_rate / ours_rate <= 1.5,
            note=f"raw smtplib {median(times['floor']):.1f} s; the sink's CPU bounds both"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rn = 100 if args.quick else 400
        subs = write_subscribers(Path(tmp) / "subscribers.csv", rn)
        rows.append(relay(venv_py, subs, rn, Path(tmp) / "state", 1 if args.quick else 2))
    report(rows, args)


if __name__ == "__main__":
    main()
