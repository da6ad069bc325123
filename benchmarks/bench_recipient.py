"""Per recipient: µs to fill one recipient's subject, HTML and text, and µs to make one complete
RFC 5322 message as bytes (make_recipient — values and the HMAC unsubscribe URL — then
MessageTemplate.build), for the example issue and for a personalised copy of it
(name, email and a CSV column in the subject and the body).

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
    report(rows, args)


if __name__ == "__main__":
    main()
