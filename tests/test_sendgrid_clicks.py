"""SendGrid's own click and open tracking counted like newsletter serve's (issue 24): an issue sent
through SendGrid's contract (Prism), then signed Event Webhook batches against the real server on
SQLite and PostgreSQL: per-link totals and unique readers in issue order, the click rate, hostile
events refused one by one; and a subject test through SendGrid decided by the webhook's clicks or opens.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer import ab_test
from newsletter_mailer.audience import clicks
from newsletter_mailer.cli import app
from newsletter_mailer.ledger import key
from newsletter_mailer.providers import sendgrid as sendgrid_provider
from newsletter_mailer.state import State, migrations
from newsletter_mailer.web.webhook import KEY_VAR
from tests.helpers.prism import prism_server
from tests.conftest import use_database
from tests.helpers.webserver import start, stop
from tests.test_webhook import KEY, PATH, public_b64, signed

runner = CliRunner()
API_KEY = "SG.test-key-for-prism"
SLUG = "sgclicks"
A, B, C = "https://example.org/a", "https://example.org/b?x=1&y=2", "https://example.org/c"
ISSUE = """\
subject: Our subject
preheader: Which links were followed
date: 2020-09-01
intro: "Hello."
sections:
  - heading: First
    body: |
      A [first]({a}), [a mail](mailto:desk@example.org) and [yours](https://example.org/p?who={{{{ email }}}}).
    links:
      - label: Read
        text: The second
        url: {b}
  - heading: Second
    body: The [first]({a}) again, and [a third]({c}).
""".format(a=A, b=B, c=C)


@pytest.fixture(scope="module")
def prism_url():
    with prism_server() as url:
        yield url


def _settings(extra: str):
    """The example settings without footer links (the issue's are the only ones), SendGrid's own tracking on."""
    return lambda text: (re.sub(r"\[\[footer_links\]\]\nlabel = .*\nurl = .*\n", "", text).replace(
        "[delivery.sendgrid]\n", "[delivery.sendgrid]\ntracking = { click = true, open = true }\n", 1) + extra)


@pytest.fixture
def newsletter(tmp_path, database_url, monkeypatch, prism_url, request):
    """(server, folder, url, requests, prism): the server on the newsletter's state; requests collects
    every mail/send body the sends make (each also validated by Prism)."""
    extra = getattr(request, "param", "")
    use_database(monkeypatch, database_url)
    folder = tmp_path / "nl"
    server = start(folder, edit=_settings(extra), env_extra={KEY_VAR: public_b64(KEY)})
    monkeypatch.setenv("NEWSLETTER_SECRET", server.secret.decode())
    (folder / "issues").mkdir()
    (folder / "issues" / f"{SLUG}.yaml").write_text(ISSUE, encoding="utf-8")
    requests: list[dict] = []
    post = sendgrid_provider.ClientTransport.post

    def recording(self, path, body):
        if path == "mail/send":
            requests.append(json.loads(json.dumps(body)))
        return post(self, path, body)

    monkeypatch.setattr(sendgrid_provider.ClientTransport, "post", recording)
    try:
        yield server, folder, database_url, requests, prism_url
    finally:
        stop(server)


def cli(folder: Path, *args: str, prism: str | None = None):
    env = {"SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": prism, "NEWSLETTER_BACKOFF_BASE": "0"} if prism else \
        {"SENDGRID_API_KEY": ""}
    env["COLUMNS"] = "250"  # the report's table unwrapped
    return runner.invoke(app, [*args, "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")],
                         env=env)


def send(folder: Path, prism: str, readers: list[str], *extra: str):
    (folder / "list.csv").write_text("email\n" + "".join(f"{r}\n" for r in readers), encoding="utf-8")
    return cli(folder, "send", str(folder / "issues" / f"{SLUG}.yaml"), "--list", str(folder / "list.csv"),
               "--provider", "sendgrid", "--no-sync", "--yes", *extra, prism=prism)


def post(server, *events: dict) -> int:
    body = json.dumps(list(events)).encode()
    return httpx.post(server.url + PATH, content=body, headers=signed(body), timeout=30).status_code


def event(kind: str, email, at: int, **more) -> dict:
    return {"sg_event_id": uuid.uuid4().hex, "event": kind, "email": email, "timestamp": at, "issue": SLUG, **more}


def per_link(folder: Path, url: str | None) -> list[tuple[int, str, int, int, int]]:
    store = State(folder / "state", url).audience()
    try:
        return [(c.link, c.url, c.clicks, c.uniques, c.scanners) for c in clicks.counts(store.db, SLUG)]
    finally:
        store.close()


READERS = [f"{n}@example.org" for n in ("ann", "bob", "cat", "dan", "eve", "fay")]


@pytest.mark.slow
@pytest.mark.parametrize("newsletter", ["", "\n[tracking]\nper_reader = true\n"], indirect=True,
                         ids=["per_reader off", "per_reader on"])
def test_webhook_clicks_and_opens_count_per_link_in_issue_order(newsletter):
    server, folder, url, requests, prism = newsletter
    sent = send(folder, prism, READERS)
    assert sent.exit_code == 0, sent.output
    body = requests[0]
    assert body["tracking_settings"]["click_tracking"]["enable"] is True
    assert all(p["custom_args"] == {"issue": SLUG} for p in body["personalizations"])  # no subject test: no "ab"
    assert per_link(folder, url) == [(1, A, 0, 0, 0), (2, B, 0, 0, 0), (3, C, 0, 0, 0)]  # stored before sending

    now = int(time.time())
    ann, bob, cat, dan, eve, fay = READERS
    first = event("click", ann, now - 600, url=A)
    good = [first, event("click", ann, now - 540, url=A), event("click", ann, now - 480, url=B),
            event("click", bob, now - 590, url=A), event("click", bob, now - 200, url=C),
            event("click", cat, now - 300, url=B.replace("&", "&amp;")),  # as the HTML part wrote it
            event("click", fay, now - 100, url=A), event("click", fay, now - 99, url=B),  # every link in 2 s:
            event("click", fay, now - 98, url=C),                                       # a scanner
            event("open", ann, now - 610), event("open", ann, now - 500), event("open", bob, now - 595),
            event("open", dan, now - 10, sg_machine_open=True),  # Apple's proxy: counted apart
            event("click", eve, now - 50, url="https://example.org/p?who=eve%40example.org")]  # a merge field
    hostile = [event("click", None, now, url=A), event("click", 12, now, url=A), event("click", [ann], now, url=B),
               event("click", dan, now, url="https://example.org/" + "x" * 100_000),
               event("click", dan, now, url="javascript:alert(1)"), event("click", dan, 10 ** 12, url=A),
               event("click", dan, -5, url=A), event("open", dan, "yesterday"), event("click", dan, now, url=A,
                                                                                     issue="never-sent"),
               event("click", dan, now, url=["a"]), event("open", dan, now, ab={"A": 1}, issue=7),
               event("click", dan, True, url=C), {"event": "click", "sg_event_id": 5, "url": A}]
    mixed = [e for pair in zip(good, hostile) for e in pair] + good[len(hostile):]
    assert post(server, *mixed) == 204
    assert post(server, first, event("open", ann, now - 610) | {"sg_event_id": good[9]["sg_event_id"]}) == 204
    log = server.log.read_text()
    assert "Traceback" not in log and " 500 " not in log
    found = re.findall(r"(\d+) event\(s\) could not be stored: (.*)", log)
    # no address (None, 12, a list), times out of range (10^12, -5, "yesterday", True): unstorable
    assert found and int(found[-1][0]) == 7 and "click (Unusable)" in found[-1][1], log
    assert not any(r in log for r in READERS)

    assert per_link(folder, url) == [(0, "", 3, 2, 1), (1, A, 3, 2, 1), (2, B, 2, 2, 1), (3, C, 1, 1, 1)]
    report = cli(folder, "report", str(folder / "issues" / f"{SLUG}.yaml"), "--out", str(folder / "r.html"))
    assert report.exit_code == 0, report.output
    lines = [re.sub(r"\s+", " ", line.strip(" │|")) for line in report.output.splitlines()]
    rows = [line for line in lines if line.startswith((A, B, C, "readers who clicked"))]
    assert rows == ["readers who clicked a link │ 3 │ 50.00%",
                    f"{A} │ 3 (2 unique) │ 33.33%", f"{B} │ 2 (2 unique) │ 33.33%", f"{C} │ 1 (1 unique) │ 16.67%"]
    assert "https://example.org/p │ 1" in lines  # the merge-field link, among the others: without its query
    assert "Clicks per link (from SendGrid's Event Webhook)" in report.output
    assert "Other clicked links" in report.output and "opened │ 3 (2 unique) │ 33.33%" in "\n".join(lines)
    page = (folder / "r.html").read_text(encoding="utf-8")
    assert "from SendGrid&#39;s Event Webhook" in page or "from SendGrid's Event Webhook" in page
    archive = cli(folder, "report", "--out", str(folder / "a.html"))
    assert archive.exit_code == 0 and "clicks" in archive.output and "50.00%" in archive.output, archive.output

    per_reader = "per_reader" in (folder / "newsletter.toml").read_text(encoding="utf-8")
    found = _addresses_next_to_links(folder, url)
    assert len(found.pop("deliveries")) == len(READERS)  # the ledger: who got the issue, no link
    if per_reader:
        assert set(found) == {"reader_clicks"} and Counter(r[0] for r in found["reader_clicks"]) == {
            ann: 5, bob: 3, cat: 1}  # fay's burst was moved apart; dan's opens were a machine's
    else:
        assert found == {}


def _addresses_next_to_links(folder: Path, url: str | None) -> dict[str, list]:
    found: dict[str, list] = {}
    for component, tables in migrations.TABLES.items():
        store = getattr(State(folder / "state", url), component)()
        try:
            for table in tables:
                for row in store.db.execute(f"SELECT * FROM {table}"):
                    text = " ".join(map(str, row)).lower()
                    if any(r in text or r.replace("@", "%40") in text for r in READERS):
                        found.setdefault(table, []).append(row)
        finally:
            store.close()
    return found


AB_READERS = [f"r{i:02d}@example.org" for i in range(40)]


@pytest.mark.slow
@pytest.mark.parametrize("newsletter", ["", '\n[tracking]\nab_winner = "opens"\n'], indirect=True,
                         ids=["by clicks", "by opens"])
def test_a_subject_test_through_sendgrid_is_decided_by_the_webhooks_events(newsletter):
    server, folder, url, requests, prism = newsletter
    opens = "opens" in (folder / "newsletter.toml").read_text(encoding="utf-8")
    first = send(folder, prism, AB_READERS, "--ab-subject", "Other subject", "--sample", "50%")
    assert first.exit_code == 0, first.output
    ledger = State(folder / "state", url).ledger()
    try:
        variants = ab_test.variants(ledger.db, SLUG)
    finally:
        ledger.close()
    sampled = [p for body in requests for p in body["personalizations"]]
    assert len(sampled) == len(variants) == 20 and Counter(variants.values()) == {"A": 10, "B": 10}
    for p in sampled:  # each sampled reader: their variant's subject, and the variant for the webhook
        v = variants[key(p["to"][0]["email"])]
        assert p["subject"] == ("Other subject" if v == "B" else "Our subject")
        assert p["custom_args"] == {"issue": SLUG, "ab": v}

    now = int(time.time())
    a = sorted(k for k, v in variants.items() if v == "A")
    b = sorted(k for k, v in variants.items() if v == "B")
    events = ([event("click", r, now - 60, url=A, ab="B") for r in b[:7]]      # clicks: A 1 of 10, B 7 of 10
              + [event("click", a[0], now - 60, url=C, ab="A"), event("click", a[0], now - 30, url=A, ab="A")]
              + [event("open", r, now - 90, ab="A") for r in a[:8]]             # opens: A 8 of 10, B 2 of 10
              + [event("open", r, now - 90, ab="B") for r in b[:2]]
              + [event("open", b[3], now - 80, ab="B", sg_machine_open=True),  # a machine's: not a reader's
                 event("click", b[8], now - 10, url=B, ab="C"), event("click", b[9], now - 10, url=B, ab=["B"])])
    assert post(server, *events) == 204
    # clicks: pooled 8/20 = 0.4, se = sqrt(0.4 × 0.6 × (1/10 + 1/10)) = 0.2191, z = 0.6 / se = 2.74, p = 0.006;
    # opens: pooled 10/20 = 0.5, se = sqrt(0.5 × 0.5 × 0.2) = 0.2236, z = -0.6 / se = -2.68, p = 0.007
    want = ("A: 8 of 10 opened (80.0%), B: 2 of 10 (20.0%); z = -2.68, p = 0.007: A is better at the 5% level"
            if opens else
            "A: 1 of 10 clicked (10.0%), B: 7 of 10 (70.0%); z = 2.74, p = 0.006: B is better at the 5% level")
    requests.clear()
    finish = send(folder, prism, AB_READERS, "--finish-ab")
    assert finish.exit_code == 0, finish.output
    assert want in finish.output, finish.output
    rest = [p for body in requests for p in body["personalizations"]]
    assert sorted(p["to"][0]["email"] for p in rest) == sorted(r for r in AB_READERS if key(r) not in variants)
    assert {p["subject"] for p in rest} == {"Our subject" if opens else "Other subject"}
    assert all(p["custom_args"] == {"issue": SLUG} for p in rest)  # only the sample's events name a variant
    requests.clear()
    again = send(folder, prism, AB_READERS, "--finish-ab")
    assert again.exit_code == 0 and "nothing to send" in again.output and requests == []
    status = cli(folder, "status", str(folder / "issues" / f"{SLUG}.yaml"))
    verb, counted = ("opened", (8, 2)) if opens else ("clicked", (1, 7))  # clicks with a bad "ab": no variant's
    assert f"subject test: A (the issue's subject): sent 10, {verb} {counted[0]}" in status.output, status.output
    assert f"subject test: B 'Other subject': sent 10, {verb} {counted[1]}" in status.output
    report = cli(folder, "report", str(folder / "issues" / f"{SLUG}.yaml"), "--out", str(folder / "r.html"))
    assert report.exit_code == 0 and "Subject test" in report.output, report.output
    assert f"{counted[0] * 10:.2f}% {verb}" in report.output, report.output


@pytest.mark.parametrize("tracking, provider, field", [
    ("[tracking]\nab_winner = \"opens\"\n", "sendgrid-without-tracking", "tracking.opens"),
    ("[tracking]\nclicks = true\nab_winner = \"opens\"\n", "outbox", "tracking.opens"),
    ("", "outbox", "tracking.clicks"),
    ("", "sendgrid-without-tracking", "tracking.clicks"),
])
def test_a_subject_test_without_a_source_for_its_metric_is_one_line(tmp_path, monkeypatch, tracking, provider, field):
    from tests.conftest import EXAMPLE_SETTINGS

    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)
    folder = tmp_path / "nl"
    (folder / "issues").mkdir(parents=True)
    (folder / "newsletter.toml").write_text(EXAMPLE_SETTINGS.read_text(encoding="utf-8") + "\n" + tracking,
                                            encoding="utf-8")
    (folder / "issues" / f"{SLUG}.yaml").write_text(ISSUE, encoding="utf-8")
    (folder / "list.csv").write_text("email\nann@example.org\n", encoding="utf-8")
    r = runner.invoke(app, ["send", str(folder / "issues" / f"{SLUG}.yaml"), "--list", str(folder / "list.csv"),
                            "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state"),
                            "--provider", provider.split("-")[0], "--no-sync", "--ab-subject", "Other", "--sample",
                            "50%", "--yes"], env={"SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": "http://127.0.0.1:9"})
    assert r.exit_code == 2, r.output
    first = r.output.strip().splitlines()[0]
    assert "newsletter.toml" in first and field in first and "ab_winner" in first, r.output
    assert "Traceback" not in r.output and not (folder / "outbox").exists()


@pytest.mark.parametrize("clicked, kept", [
    ("https://example.org/news/page?who=ann%40example.org#top", "https://example.org/news/page"),
    ("https://ann%40example.org@example.org/page", "https://example.org/page"),
    ("https://example.org/u/ann@example.org", "https://example.org"),
    ("https://example.org/u/ann%40example.org", "https://example.org"),
    ("https://example.org/u/ann%2540example.org", "https://example.org"),  # encoded twice
    ("https://example.org/u/ann%252540example.org", "https://example.org"),  # three times
    ("https://example.org/a%20b/c", "https://example.org/a%20b/c"),
])
def test_a_clicked_url_is_kept_without_anything_that_names_the_reader(clicked, kept):
    from newsletter_mailer.web.webhook import _kept

    assert _kept(clicked) == kept
