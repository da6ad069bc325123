"""`newsletter report` (issue 14): numbers from a real send's ledger, the audience store and SendGrid
(a scripted server and Prism), in the terminal and on a self-contained page checked in Chromium."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience import sendgrid_store
from newsletter_mailer.audience.store import Change
from newsletter_mailer.cli import app
from newsletter_mailer.providers.base import Outcome
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from tests.helpers.sendgrid_api import KEY, FakeSendGrid, serve
from newsletter_mailer.state import State

runner = CliRunner()
LIST = "".join(["email,name\n"] + [f"reader{i}@example.org,Reader {i}\n" for i in range(12)])
OLDER = MINI_ISSUE.replace("date: 2020-09-01", "date: 2020-08-01")


@pytest.fixture
def nl(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    (tmp_path / "issues" / "older.yaml").write_text(OLDER, encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text(LIST, encoding="utf-8")
    return tmp_path


def cli(nl: Path, *args: str, env: dict | None = None):
    return runner.invoke(app, [*args, "--config", str(nl / "newsletter.toml"), "--state", str(nl / "state")],
                         env={"SENDGRID_API_KEY": "", **(env or {})})


def send(nl: Path, slug: str, *extra: str, env: dict | None = None) -> None:
    r = cli(nl, "send", str(nl / "issues" / f"{slug}.yaml"), "--list", str(nl / "subscribers.csv"), "--yes",
            "--outbox", str(nl / "outbox"), *extra, env=env)
    assert r.exit_code == 0, r.output


def fill_store(nl: Path) -> None:
    """What readers did, through the store's own APIs: some of it about mini, some about older."""
    store = State(nl / "state").audience()
    store.record([Change("reader1@example.org", "unsubscribed", "link", issue="mini"),
                  Change("reader1@example.org", "unsubscribed", "one-click", issue="mini"),  # the same reader
                  Change("reader2@example.org", "unsubscribed", "one-click", issue="mini"),
                  Change("reader3@example.org", "bounced", "sendgrid", issue="mini"),
                  Change("reader4@example.org", "complained", "sendgrid", issue="mini"),
                  Change("reader5@example.org", "unsubscribed", "link", issue="older")])
    with store.transaction():
        sendgrid_store.block(store, "reader6@example.org", int(dt.datetime.now().timestamp()), "sendgrid",
                             "4.7.1", "greylisted", issue="mini")
        for event, url in [("delivered", None)] * 9 + [("open", None)] * 5 + [
                ("click", "https://example.org/story")] * 3 + [("click", "javascript:alert(1)<b>")]:
            sendgrid_store.count(store, "mini", event, url)
    store.close()


def fail_one(nl: Path) -> None:
    """A permanent refusal, recorded as a send records it."""
    ledger = State(nl / "state").ledger()
    ledger.begin("mini", ["late@example.org"], "outbox")
    ledger.finish("mini", [Outcome("late@example.org", ok=False, error="550 no such user", permanent=True)])
    ledger.close()


def as_sendgrid(nl: Path) -> None:
    """As if SendGrid had sent mini: the report then counts the store's webhook events."""
    db = sqlite3.connect(nl / "state" / "ledger.sqlite3")
    db.execute("UPDATE deliveries SET provider='sendgrid' WHERE issue='mini'")
    db.commit()
    db.close()


def expected(nl: Path, slug: str) -> dict[str, int]:
    """The numbers, counted here with SQL of the test's own."""
    db = sqlite3.connect(nl / "state" / "ledger.sqlite3")
    out = dict(db.execute("SELECT status, count(*) FROM deliveries WHERE issue=? GROUP BY status", (slug,)))
    db.close()
    db = sqlite3.connect(nl / "state" / "audience.sqlite3")
    for status, name in (("unsubscribed", "unsubscribes"), ("bounced", "hard bounces"), ("complained", "complaints")):
        out[name] = db.execute("SELECT count(DISTINCT email) FROM history WHERE issue=? AND status=?",
                               (slug, status)).fetchone()[0]
    out["soft bounces"] = db.execute("SELECT count(DISTINCT email) FROM blocks WHERE issue=?", (slug,)).fetchone()[0]
    db.close()
    return out


class Cells(HTMLParser):
    """{data-measure: text} of the page's headline tables, and the hrefs of its links."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.hrefs: list[str] = []
        self._measure: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-measure" in a:
            self._measure = a["data-measure"]
        if tag == "a":
            self.hrefs.append(a.get("href"))

    def handle_data(self, data):
        if self._measure is not None:
            self.cells[self._measure] = data
            self._measure = None


def page_cells(path: Path) -> Cells:
    parser = Cells()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def terminal(output: str, measure: str) -> str:
    m = re.search(rf"│\s+{re.escape(measure)}\s+│\s+(\S+) │", output)
    assert m, f"{measure} not in:\n{output}"
    return m.group(1)


@pytest.fixture
def sent(nl: Path) -> Path:
    send(nl, "older")
    send(nl, "mini")
    fail_one(nl)
    fill_store(nl)
    return nl


def test_the_numbers_equal_the_ledger_and_the_store(sent):
    out = sent / "report.html"
    r = cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(out))
    assert r.exit_code == 0, r.output
    want = expected(sent, "mini")
    assert want["sent"] == 12 and want["failed"] == 1 and want["unsubscribes"] == 2  # the scenario is what we think
    page = page_cells(out).cells
    for measure in ("sent", "failed", "unsubscribes", "hard bounces", "soft bounces", "complaints"):
        assert terminal(r.output, measure) == str(want[measure]) == page[measure], measure
    assert page["failed: 550 no such user"] == "1"
    assert f"{2 / 12 * 100:.2f}%" in r.output  # unsubscribe rate of those sent
    assert "Gmail's 0.3% limit" in r.output and "over Gmail" in r.output  # 1 complaint in 12 is over
    assert out.stat().st_mode & 0o777 == 0o600


def test_the_page_has_charts_with_text_alternatives_and_nothing_external(sent):
    as_sendgrid(sent)  # the webhook's counts: the funnel has stages to compare
    out = sent / "report.html"
    assert cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(out)).exit_code == 0
    html = out.read_text(encoding="utf-8")
    svgs = re.findall(r"<svg\b[^>]*>", html)
    assert len(svgs) >= 3 and all('role="img"' in s and "aria-label=" in s for s in svgs)  # funnel, timeline, trend
    assert len(re.findall(r"<svg\b[^>]*><title>[^<]+</title><desc>[^<]+</desc>", html)) == len(svgs)
    assert html.count('<table class="alt">') == len(svgs)
    assert "<script" not in html and not re.search(r"""(?:src|href)=["']?(?!#)[a-z]+:""", html.replace(
        'href="https://example.org/story"', ""))
    assert re.search(r"<th>Gmail|Gmail's complaint limit \(0\.3%\)", html)
    assert html.count(">Gmail's 0.3% line</text>") == 1  # the trend's legend names its own line


def test_a_funnel_of_sent_alone_is_a_sentence_and_its_table(sent):
    out = sent / "report.html"
    assert cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(out)).exit_code == 0
    html = out.read_text(encoding="utf-8")
    funnel = html.split("<figcaption>From sent to clicked</figcaption>")[1].split("</figure>")[0]
    assert "<svg" not in funnel
    assert "No delivery, open or click data yet: SendGrid&#39;s statistics or its Event Webhook provide them" in funnel
    assert re.findall(r'<th scope="row">([^<]+)</th><td class="n"[^>]*>([^<]+)</td>', funnel) == [("sent", "12")]
    assert len(re.findall(r"<svg\b", html)) == 2  # the timeline and the trend still drawn


@pytest.mark.parametrize("width", [375, 1200])
def test_the_page_in_chromium(sent, width):
    from tests.helpers.browser import open_page

    as_sendgrid(sent)  # the webhook's counts: the funnel has stages to compare
    out = sent / "report.html"
    assert cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(out)).exit_code == 0
    requests: list[str] = []
    with open_page(out, width) as page:
        page.on("request", lambda req: requests.append(req.url))
        page.reload(wait_until="load")
        charts = page.evaluate("""() => Array.from(document.querySelectorAll('figure svg'), s => {
            const r = s.getBoundingClientRect(); return [r.width, r.height, s.querySelectorAll('rect, path').length]; })""")
        metrics = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        sent_cell = page.locator('td[data-measure="sent"]').inner_text()
    assert len(charts) >= 3 and all(w > 100 and h > 50 and shapes > 0 for w, h, shapes in charts), charts
    assert metrics[0] <= metrics[1], metrics
    assert requests == [out.resolve().as_uri()]
    assert sent_cell == str(expected(sent, "mini")["sent"])


# every element whose content is wider than its box (it would scroll or be cut off), but for what is
# clipped out of sight on purpose (a stacked table's header row, kept for screen readers)
_WIDER = """() => Array.from(document.querySelectorAll('*')).filter(e => e.scrollWidth > e.clientWidth
    && e.clientWidth > 0 && !Array.from(document.querySelectorAll('*')).some(a => a.contains(e)
    && getComputedStyle(a).clipPath !== 'none')).map(e => e.tagName + '.' + e.className + ' ' + e.scrollWidth)"""
_CHARTS = """() => Array.from(document.querySelectorAll('figure svg'), s => ({
    caption: s.closest('figure').querySelector('figcaption').textContent,
    titles: Array.from(s.querySelectorAll('text.title'), t => t.textContent),
    ticks: Array.from(s.querySelectorAll('.axis.y text'), t => {
        const r = t.getBoundingClientRect(); return [t.textContent, r.top, r.bottom, r.height]; })}))"""
_GMAIL = """() => { const svg = document.querySelectorAll('figure svg')[document.querySelectorAll('figure svg').length - 1];
    const line = getComputedStyle(svg.querySelector('.series.serie-3 path.line'));
    const guide = getComputedStyle(svg.querySelector('.axis.y path.guide'));
    return {legend: svg.querySelector('[id$="-activate-serie-3"] text').textContent,
            key: getComputedStyle(svg.querySelector('[id$="-activate-serie-3"] rect')).fill,
            name: svg.querySelector('.series.serie-3 > title').textContent,
            stroke: line.stroke, dash: line.strokeDasharray, guide: [guide.stroke, guide.strokeDasharray]}; }"""


@pytest.mark.parametrize("width", [375, 1200])
def test_nothing_scrolls_sideways_and_the_charts_read(sent, width):
    """The page and every table in it fit the window; each chart has 4-6 y ticks that do not
    overlap, no title repeating its caption, and Gmail's line is its own dashed red series."""
    from tests.helpers.browser import open_page

    as_sendgrid(sent)
    long = "2024-05-spring-term-update-with-a-long-name"
    (sent / "issues" / f"{long}.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    send(sent, long)
    pages = [sent / "mini.html", sent / "all.html"]
    assert cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(pages[0])).exit_code == 0
    assert cli(sent, "report", "--out", str(pages[1])).exit_code == 0
    for path in pages:
        with open_page(path, width) as page:
            wider = page.evaluate(_WIDER)
            charts = page.evaluate(_CHARTS)
            gmail = page.evaluate(_GMAIL)
            tables = page.evaluate("() => document.querySelectorAll('table').length")
        assert wider == [] and tables >= 2, (path.name, wider)
        assert charts and all(c["titles"] == [] and 4 <= len(c["ticks"]) <= 6 for c in charts), charts
        for chart in charts:
            ticks = sorted(chart["ticks"], key=lambda t: t[1])
            assert all(t[3] >= 8 for t in ticks), ticks  # at least 8 px tall at 375 px
            assert all(a[2] <= b[1] for a, b in zip(ticks, ticks[1:])), ticks  # no overlap
        assert gmail["legend"] == "Gmail's 0.3% line" and gmail["name"] == "Gmail's complaint limit (0.3%)"
        assert gmail["stroke"] == gmail["key"] == "rgb(213, 94, 0)"  # Okabe–Ito's vermillion
        assert gmail["dash"] not in ("none", "") and gmail["guide"][0] != gmail["stroke"], gmail
        assert gmail["guide"][1] == "none", gmail  # gridlines are solid: only the limit is dashed


def test_links_are_escaped_and_only_http_is_clickable(sent):
    env = {"SENDGRID_API_KEY": ""}
    as_sendgrid(sent)
    out = sent / "report.html"
    r = cli(sent, "report", str(sent / "issues" / "mini.yaml"), "--out", str(out), env=env)
    assert r.exit_code == 0, r.output
    assert "SendGrid stats: not available (SENDGRID_API_KEY not set)" in r.output
    cells = page_cells(out)
    assert cells.hrefs == ["https://example.org/story"]
    html = out.read_text(encoding="utf-8")
    assert "javascript:alert(1)&lt;b&gt;" in html and "<b>" not in html
    assert cells.cells["SendGrid stats"] == "not available (SENDGRID_API_KEY not set)"
    assert cells.cells["delivered"] == "9" and cells.cells["opens"] == "5" and cells.cells["clicks"] == "4"


def _sendgrid_env(fake: FakeSendGrid) -> dict:
    return {"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": fake.url, "NEWSLETTER_BACKOFF_BASE": "0"}


def test_sendgrid_stats_from_the_scripted_server(nl):
    fake = FakeSendGrid()
    server = serve(fake)
    try:
        send(nl, "mini", "--provider", "sendgrid", "--no-sync", env=_sendgrid_env(fake))
        today = dt.datetime.now(dt.timezone.utc).date()
        day = lambda n, o, c: {"delivered": n, "opens": o * 2, "unique_opens": o, "clicks": c * 2,  # noqa: E731
                               "unique_clicks": c, "bounces": 0, "spam_reports": 1}
        fake.stats = {"mini": [(today.isoformat(), day(11, 6, 2)), ((today + dt.timedelta(days=1)).isoformat(),
                                                                    day(1, 3, 1))],
                      "other": [(today.isoformat(), day(99, 99, 99))]}
        out = nl / "report.html"
        r = cli(nl, "report", str(nl / "issues" / "mini.yaml"), "--out", str(out), env=_sendgrid_env(fake))
    finally:
        server.shutdown()
    assert r.exit_code == 0, r.output
    path, query, auth = fake.requests[-1]
    assert path == "/v3/categories/stats" and auth == f"Bearer {KEY}"
    assert query["categories"] == "mini" and query["start_date"] == today.isoformat() and query["aggregated_by"] == "day"
    cells = page_cells(out).cells
    assert cells["delivered"] == "12" and cells["unique opens"] == "9" and cells["unique clicks"] == "3"
    assert cells["spam reports"] == "2" and terminal(r.output, "delivered") == "12"
    html = out.read_text(encoding="utf-8")
    assert "SendGrid per day" in html and "not available" not in html
    assert KEY not in r.output and KEY not in html


def test_a_refused_key_still_reports(nl):
    fake = FakeSendGrid()
    server = serve(fake)
    try:
        send(nl, "mini", "--provider", "sendgrid", "--no-sync", env=_sendgrid_env(fake))
        r = cli(nl, "report", str(nl / "issues" / "mini.yaml"), "--out", str(nl / "r.html"),
                env={**_sendgrid_env(fake), "SENDGRID_API_KEY": "SG.wrong-key-abcdef"})
    finally:
        server.shutdown()
    assert r.exit_code == 0, r.output
    assert page_cells(nl / "r.html").cells["SendGrid stats"].startswith("not available (SendGrid refused the API key")
    assert "SG.wrong" not in r.output


def test_sendgrid_stats_request_meets_the_contract(nl):
    """Prism validates the GET against SendGrid's OpenAPI description and answers its example (other
    categories than ours: so zero for this issue, per day)."""
    from tests.helpers.prism import prism_server

    fake = FakeSendGrid()
    server = serve(fake)
    try:
        send(nl, "mini", "--provider", "sendgrid", "--no-sync", env=_sendgrid_env(fake))
    finally:
        server.shutdown()
    with prism_server() as url:
        r = cli(nl, "report", str(nl / "issues" / "mini.yaml"), "--out", str(nl / "r.html"),
                env={"SENDGRID_API_KEY": KEY, "SENDGRID_API_HOST": url, "NEWSLETTER_BACKOFF_BASE": "0"})
    assert r.exit_code == 0, r.output
    cells = page_cells(nl / "r.html").cells
    assert "SendGrid stats" not in cells and cells["delivered"] == "0" and cells["unique opens"] == "0"
    assert "SendGrid per day" in (nl / "r.html").read_text(encoding="utf-8")


def test_every_issue_newest_first(sent):
    (sent / "issues" / "gone.yaml").write_text(MINI_ISSUE.replace("2020-09-01", "2019-01-01"), encoding="utf-8")
    send(sent, "gone")
    (sent / "issues" / "gone.yaml").unlink()  # dated by its last send (today) from now on
    out = sent / "all.html"
    r = cli(sent, "report", "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = re.findall(r"<tr><th scope=\"row\">([^<]+)</th>((?:<td class=\"n\"[^>]*>[^<]*</td>)+)</tr>",
                      out.read_text(encoding="utf-8").split('id="archive"')[1].split("</table>")[0])
    assert [slug for slug, _ in rows] == ["gone", "mini", "older"]
    mini = re.findall(r">([^<]*)</td>", rows[1][1])
    assert mini[:2] == ["2020-09-01", str(expected(sent, "mini")["sent"])] and mini[4] == f"{2 / 12 * 100:.2f}%"
    assert [line.split("│")[1].strip() for line in r.output.splitlines() if line.startswith("│ ")
            and line.split("│")[1].strip() in ("gone", "mini", "older")] == ["gone", "mini", "older"]


def test_every_issue_piped_at_80_columns_splits_no_word(sent):
    """A pipe is 80 columns to rich: labels and slugs stay whole (no `uncertai`/`n`), numbers too."""
    long = "2024-05-spring-term-update"
    (sent / "issues" / f"{long}.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    send(sent, long)
    r = cli(sent, "report", "--out", str(sent / "all.html"), env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    header = next(l for l in lines if l.startswith("┃") and "issue" in l)
    assert [c.strip() for c in header.strip("┃").split("┃")] == [
        "issue", "date", "sent", "failed", "uncertain", "unsubs", "bounces", "complaints"]
    rows = [[c.strip() for c in l.strip("│").split("│")] for l in lines if l.startswith("│")]
    assert [row[0] for row in rows] == [long, "mini", "older"] and all(row[1].count("-") == 2 for row in rows)
    assert "…" not in r.output


def test_nothing_sent_is_one_line(nl):
    r = cli(nl, "report")
    assert r.exit_code == 2 and "nothing sent yet" in r.output and "Traceback" not in r.output
    send(nl, "older")
    r = cli(nl, "report", str(nl / "issues" / "mini.yaml"))
    assert r.exit_code == 2 and "mini has not been sent" in r.output
