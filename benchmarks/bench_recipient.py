"""Per recipient: µs to fill one recipient's subject, HTML and text, and µs to make one complete
RFC 5322 message as bytes (make_recipient — values and the HMAC unsubscribe URL — then
MessageTemplate.build), for the example issue and for a personalised copy of it
(name, email and a CSV column in the subject and the body). Then the cost of [delivery]
return_path with verp = true: each message's envelope sender bounces+<token>@… and the Return-Path
line the outbox writes, against the same message without them; with unsubscribe_mailto (the
reader's token is sealed anyway) and without it (VERP alone makes the seal).

python benchmarks/bench_recipient.py [--quick] [--json FILE]
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

from _common import EXAMPLE_ISSUE, Row, cli, median, personalised_issue, report, timed


def prepared(issue: Path, state: Path):
    from newsletter_mailer.send import Options, prepare

    return prepare(Options(issue=issue, config=issue.parent.parent / "newsletter.toml", state=state,
                           outbox=state / "outbox", provider="outbox", env={"NEWSLETTER_SECRET": "fERpt-yjzuIM0zToRpqkm13QHQHeLZxXw5AIiTbtKVY"}))


def measure(issue: Path, state: Path, n: int, repeat: int) -> tuple[float, float, int]:

    p = prepared(issue, state)
    c = p.composed
    messages = p.provider.ctx.messages
    filler = c.filler()
    people = [(f"reader.{i}@example{i % 50}.org", f"Reader {i}", {"school_year": f"Year {7 + i % 5}"})
              for i in range(n)]
    url = c.settings.web_base + "/unsubscribe?email=x&token=y"
    subject, body, text = c.subject, c.html, c.text

    def fill() -> None:
        for email, name, fields in people:
            values = filler.values(email, name, fields, url)
            subject.fill(values)
            body.fill([html.escape(v) for v in values])
            text.fill(values)

    def build() -> None:
        for email, name, fields in people:
            r = p.recipient(email, name, fields)
            messages.build(r.email, r.name, r.values)

    fill()
    build()
    fill_us = median(timed(fill, repeat)) / n * 1e6
    build_us = median(timed(build, repeat)) / n * 1e6
    size = len(messages.build(*people[0][:2], p.recipient(*people[0]).values)[1])
    return fill_us, build_us, size


def _settings_copy(folder: Path, *, verp: bool, mailto: bool) -> Path:
    """The example newsletter in folder, with or without VERP and unsubscribe_mailto; its issue."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issues").mkdir(exist_ok=True)
    text = (EXAMPLE_ISSUE.parent.parent / "newsletter.toml").read_text(encoding="utf-8")
    if not mailto:
        text = "\n".join(l for l in text.splitlines() if not l.startswith("unsubscribe_mailto")) + "\n"
    if verp:
        text = text.replace("[delivery]\n", '[delivery]\nreturn_path = "bounces@example.org"\nverp = true\n', 1)
    (folder / "newsletter.toml").write_text(text, encoding="utf-8")
    issue = folder / "issues" / EXAMPLE_ISSUE.name
    issue.write_text(EXAMPLE_ISSUE.read_text(encoding="utf-8"), encoding="utf-8")
    return issue


def measure_verp(tmp: Path, n: int, repeat: int, mailto: bool) -> tuple[float, float]:
    """µs a message as the outbox makes it (make_recipient, build, envelope sender, Return-Path),
    without and with VERP."""
    out = []
    for verp in (False, True):
        folder = tmp / f"verp-{verp}-{mailto}"
        p = prepared(_settings_copy(folder, verp=verp, mailto=mailto), folder / "state")
        messages = p.provider.ctx.messages
        people = [(f"reader.{i}@example{i % 50}.org", f"Reader {i}", {}) for i in range(n)]

        def build() -> None:
            envelope = messages.envelope_sender
            for email, name, fields in people:
                r = p.recipient(email, name, fields)  # as providers/outbox.py does
                sender = envelope(r.token)
                head = b"Return-Path: <" + sender.encode("ascii") + b">\r\n" if sender is not None else b""
                messages.build(r.email, r.name, r.values, r.message_id, r.token, head)

        build()
        out.append(median(timed(build, repeat)) / n * 1e6)
    return out[0], out[1]


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat = (2000, 3) if args.quick else (20000, 7)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, issue in (("example issue", EXAMPLE_ISSUE), ("personalised issue", personalised_issue(tmp / "p"))):
            fill_us, build_us, size = measure(issue, tmp / "state", n, repeat)
            rows.append(Row(f"fill subject + HTML + text, one recipient ({label})", fill_us, "µs",
                            goal="≤ 10 µs", met=fill_us <= 10))
            rows.append(Row(f"one complete message as bytes incl. make_recipient ({label})", build_us, "µs",
                            goal="≤ 30 µs", met=build_us <= 30, note=f"{size:,} bytes a message"))
        for mailto in (True, False):
            plain_us, verp_us = measure_verp(tmp, n, repeat, mailto)
            why = ("the reader's token is sealed anyway (unsubscribe_mailto)" if mailto
                   else "no unsubscribe_mailto: VERP alone seals the token")
            rows.append(Row(f"one message with VERP (envelope sender + Return-Path) vs without (example issue) — {why}",
                            verp_us, "µs", plain_us, "the same message without a return path",
                            goal="≤ 1.1× without" if mailto else "", met=verp_us <= 1.1 * plain_us if mailto else None,
                            note=f"+{verp_us - plain_us:.1f} µs a message"))
    report(rows, args)


if __name__ == "__main__":
    main()
