"""[tracking] clicks (issue 24): links through the real server's /c/, counted privately, scanners apart.

Each test sends a small issue through the outbox with the CLI, then follows its links against a real
uvicorn server (tests/helpers/webserver.py) on the same state, SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer import tokens
from newsletter_mailer.audience import clicks
from newsletter_mailer.cli import app
from newsletter_mailer.state import State
from newsletter_mailer.state import migrations
from tests.helpers.webserver import SECRET, start, stop
from tests.conftest import use_database

runner = CliRunner()
READERS = ("ann@example.org", "bob@example.org", "cat@example.org")
ISSUE = """\
subject: Clicks
preheader: Which links were followed
date: 2020-09-01
intro: "Hello."
sections:
  - heading: First
    body: |
      A [page of ours]({server}/style.css?n=1) and [a mail](mailto:desk@example.org).
    links:
      - label: Read
        text: The story
        url: {server}/style.css?n=2&b=3
  - heading: Second
    body: The [same page]({server}/style.css?n=1) again, and [another]({server}/style.css?n=3).
"""


def _tracking(per_reader: bool | str):
    """The example settings without their footer links (every link leads to the test's server) and with
    [tracking]; per_reader "opens": the pixel too."""
    extra = "opens = true\n" if per_reader == "opens" else "per_reader = true\n" if per_reader else ""
    return lambda text: re.sub(r"\[\[footer_links\]\]\nlabel = .*\nurl = .*\n", "", text) + \
        f"\n[tracking]\nclicks = true\n{extra}"


@pytest.fixture
def sent(tmp_path, database_url, monkeypatch, request):
    """(server, folder, url, {reader: message}) after a send of the issue to READERS."""
    per_reader = getattr(request, "param", False)
    use_database(monkeypatch, database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    folder = tmp_path / "nl"
    server = start(folder, edit=_tracking(per_reader))
    try:
        (folder / "issues").mkdir()
        (folder / "issues" / "clicks.yaml").write_text(ISSUE.format(server=server.url), encoding="utf-8")
        (folder / "list.csv").write_text("email,name\n" + "".join(f"{r},\n" for r in READERS), encoding="utf-8")
        yield server, folder, database_url, send(folder)
    finally:
        stop(server)


def send(folder: Path, *extra: str) -> dict[str, email.message.EmailMessage]:
    r = runner.invoke(app, ["send", str(folder / "issues" / "clicks.yaml"), "--list", str(folder / "list.csv"),
                            "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state"),
                            "--outbox", str(folder / "outbox"), "--provider", "outbox", "--yes", *extra])
    assert r.exit_code == 0, r.output
    out = {}
    for path in sorted((folder / "outbox" / "clicks").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out[msg["To"].addresses[0].addr_spec] = msg
    return out


def parts(msg) -> tuple[str, str]:
    return (msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content())


def hrefs(msg) -> list[str]:
    import html

    return [html.unescape(h) for h in re.findall(r'<a\b[^>]*?\bhref="([^"]*)"', parts(msg)[0])]


def tracked(server, msg) -> list[str]:
    """The message's /c/ links in the order they appear, each once."""
    return list(dict.fromkeys(h for h in hrefs(msg) if h.startswith(server.url + "/c/")))


def counts(folder: Path, url: str | None) -> dict[str, tuple[int, int, int]]:
    store = State(folder / "state", url).audience()
    try:
        return {c.url: (c.clicks, c.uniques, c.scanners) for c in clicks.counts(store.db, "clicks") if c.link > 0}
    finally:
        store.close()


def expected_links(server) -> list[str]:
    return [f"{server.url}/style.css?n={n}" for n in (1, "2&b=3", 3)]


def test_every_issue_link_goes_through_c_in_both_parts_and_lands_on_its_url(sent):
    server, folder, url, messages = sent
    assert set(messages) == set(READERS)
    for reader, msg in messages.items():
        html_part, text = parts(msg)
        links = hrefs(msg)
        assert [h for h in links if h.startswith("mailto:")] == ["mailto:desk@example.org"]
        assert any(h.startswith(server.url + "/u/") for h in links)  # the unsubscribe link: not tracked
        assert "https://example.org/newsletter/clicks/" in links  # the web copy: not tracked
        others = [h for h in links if h.startswith("http") and not h.startswith((server.url + "/u/",
                                                                                  "https://example.org/newsletter/"))]
        assert others and all(h.startswith(server.url + "/c/") for h in others)
        assert not set(links) & set(expected_links(server))
        text_links = re.findall(r"https?://[^\s)]+", text)
        assert not set(text_links) & set(expected_links(server))
        assert set(tracked(server, msg)) == set(re.findall(re.escape(server.url) + r"/c/[^\s)]+", text))
        with httpx.Client() as c:
            landed = [c.get(h).headers.get("location") for h in tracked(server, msg)[:-1]]
        assert landed == expected_links(server)[:-1]
    assert len({tuple(tracked(server, m)) for m in messages.values()}) == len(READERS)  # per-reader links


def test_chromium_lands_on_each_link_and_each_reader_counts_once(sent):
    from tests.helpers.browser import open_page

    server, folder, url, messages = sent
    want = expected_links(server)
    a, b = (tracked(server, messages[r]) for r in READERS[:2])
    html_file = folder / "ann.html"
    html_file.write_text(parts(messages[READERS[0]])[0], encoding="utf-8")
    with open_page(html_file, 600) as page:
        # Ann follows every link but the last (all of them would read as a scanner), the first twice;
        # Bob the first and the last: every link is followed by someone.
        for i, link in [(i, a[i]) for i in range(len(a) - 1)] + [(0, a[0])] + [(0, b[0]), (len(b) - 1, b[-1])]:
            page.goto(link)
            assert page.url == want[i]
    got = counts(folder, url)
    assert got[want[0]] == (3, 2, 0)
    assert got[want[-1]] == (1, 1, 0)
    for link in want[1:-1]:
        assert got[link] == (1, 1, 0)


def _forged(server, folder, msg, per_reader: bool) -> dict[str, str]:
    """Tokens that must not redirect: each part of a genuine one altered, swapped or made elsewhere.
    Without per_reader a token is `<code>.<issue>.<pseudonym>`; with it `<code>.<sealed address>`."""
    from newsletter_mailer.settings import load_settings
    from newsletter_mailer.state.handle import State as S

    good = tracked(server, msg)[0].rsplit("/", 1)[1]
    code, _, rest = good.partition(".")
    slug, _, reader = rest.rpartition(".")
    assert (slug == "") == per_reader  # the issue in clear only in the pseudonymous form
    list_id = S(folder / "state").list_ids(load_settings(folder / "newsletter.toml")[0], record=False)[0]
    secret = SECRET.encode()
    flip = lambda s, i: s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]  # noqa: E731
    other_url = tokens.make_link_code(secret, list_id, "clicks", 1, "https://evil.example/")
    other_code = tokens.make_link_code(secret, list_id, "other", 1, expected_links(server)[0])
    mid = f".{slug}." if slug else "."
    if per_reader:
        readers = {"another issue": f"{other_code}.{tokens.make_click_reader(secret, list_id, 'other', READERS[0])}",
                   "another secret": f"{code}.{tokens.make_click_reader(b'another secret', list_id, 'clicks', READERS[0])}"}
    else:
        maker = tokens.click_pseudonym_maker
        readers = {
            "another issue": f"{other_code}.other.{maker(secret, list_id, 'other')(READERS[0])}",
            "the issue swapped": f"{other_code}.other.{reader}",
            "the issue renamed in clear": f"{code}.other.{reader}",
            "another secret": f"{code}{mid}{maker(b'another secret', list_id, 'clicks')(READERS[0])}",
            "another list": f"{code}{mid}{maker(secret, 'other.list', 'clicks')(READERS[0])}",
            "a variant added": f"{code}{mid}{reader}B",
            "a variant that is none": f"{code}{mid}{reader[:32]}C",
            "the pseudonym cut": f"{code}{mid}{reader[:-1]}",
            "a sealed address in the pseudonym's place": f"{code}{mid}"
                                                         f"{tokens.make_click_reader(secret, list_id, 'clicks', READERS[0])}",
            "no issue": f"{code}..{reader}",
        }
    return {
        "code altered": f"{flip(code, 5)}{mid}{reader}",
        "link id altered": f"{flip(code, 1)}{mid}{reader}",
        "reader altered": f"{code}{mid}{flip(reader, 8)}",
        "another url": f"{other_url}{mid}{reader}",
        **readers,
        "the pixel's id": f"{tokens.make_link_code(secret, list_id, 'clicks', 0, '')}{mid}{reader}",
        "an unsubscribe token": f"{code}{mid}{tokens.make_unsubscribe(secret, list_id, READERS[0], 'clicks')}",
        "no dot": code + reader,
        "garbage": "https:..evil.example",
    }


@pytest.mark.parametrize("sent", [False, True], indirect=True, ids=["per_reader off", "per_reader on"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_forged_altered_or_other_url_tokens_never_redirect(sent, method, request):
    server, folder, url, messages = sent
    per_reader = request.node.callspec.params["sent"]
    with httpx.Client() as c:
        for kind, token in _forged(server, folder, messages[READERS[0]], per_reader).items():
            r = c.request(method, f"{server.url}/c/{token}")
            assert 400 <= r.status_code < 500, kind
            assert "location" not in r.headers, kind
            if method == "GET":
                assert "This link is not valid" in r.text, kind
        genuine = tracked(server, messages[READERS[0]])[0]  # the untouched token still works afterwards
        assert c.request(method, genuine).headers["location"] == expected_links(server)[0]
    assert sum(v[0] + v[2] for v in counts(folder, url).values()) == 1


def test_head_and_scanner_agents_and_a_burst_are_counted_apart(sent):
    server, folder, url, messages = sent
    want = expected_links(server)
    ann, bob, cat = (tracked(server, messages[r]) for r in READERS)
    with httpx.Client() as c:
        assert c.head(ann[0]).headers["location"] == want[0]  # a HEAD: redirected, counted as a scanner
        r = c.get(ann[1], headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})
        assert r.headers["location"] == want[1]
        for link in bob:  # every link of Bob's message at once: a scanner
            assert c.get(link).status_code == 302
        c.get(cat[2])  # a reader among them
    got = counts(folder, url)
    assert got[want[0]] == (0, 0, 2)
    assert got[want[1]] == (0, 0, 2)
    assert got[want[2]] == (1, 1, 1)


@pytest.mark.parametrize("sent", [False, True], indirect=True, ids=["per_reader off", "per_reader on"])
def test_no_table_holds_an_address_next_to_a_link_unless_per_reader(sent, request):
    server, folder, url, messages = sent
    per_reader = request.node.callspec.params["sent"]
    with httpx.Client() as c:
        for reader in READERS[:2]:
            c.get(tracked(server, messages[reader])[0])
    found = {}
    for component, tables in migrations.TABLES.items():
        store = getattr(State(folder / "state", url), component)()
        try:
            for table in tables:
                for row in store.db.execute(f"SELECT * FROM {table}"):
                    text = " ".join(map(str, row)).lower()
                    if any(r in text for r in READERS):
                        found.setdefault(table, []).append(row)
        finally:
            store.close()
    assert len(found.pop("deliveries")) == len(READERS)  # the ledger: who got the issue, no link
    if per_reader:
        assert set(found) == {"reader_clicks"} and len(found["reader_clicks"]) == 2
        r = runner.invoke(app, ["audience", "list", "--format", "csv", "--config", str(folder / "newsletter.toml"),
                                "--state", str(folder / "state")])
        assert r.exit_code == 0, r.output
        assert "clicks" in r.output.splitlines()[0] and f"{READERS[0]}," in r.output and "clicks#1" in r.output
    else:
        assert found == {}


def test_a_click_while_the_send_runs_is_counted(tmp_path, database_url, monkeypatch):
    from newsletter_mailer.providers.outbox import OutboxProvider

    if database_url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    folder = tmp_path / "nl"
    server = start(folder, edit=_tracking(False))
    try:
        (folder / "issues").mkdir()
        (folder / "issues" / "clicks.yaml").write_text(ISSUE.format(server=server.url), encoding="utf-8")
        (folder / "list.csv").write_text("email\n" + "".join(f"r{i}@example.org\n" for i in range(120)),
                                         encoding="utf-8")
        original, answers = OutboxProvider.send, []

        def send_then_click(self, batch):
            outcomes = original(self, batch)
            if not answers:  # the first batch is out, the rest not yet: its first reader clicks
                first = sorted((folder / "outbox" / "clicks").glob("*.eml"))[0]
                msg = email.message_from_bytes(first.read_bytes(), policy=email.policy.default)
                answers.append(httpx.get(tracked(server, msg)[0]).status_code)
            return outcomes

        monkeypatch.setattr(OutboxProvider, "send", send_then_click)
        monkeypatch.setattr(OutboxProvider, "batch_size", 50, raising=False)
        messages = send(folder)
        assert len(messages) == 120 and answers == [302]
        assert counts(folder, database_url)[f"{server.url}/style.css?n=1"] == (1, 1, 0)
    finally:
        stop(server)


def test_the_report_shows_each_link_in_issue_order_and_the_click_rate(sent):
    server, folder, url, messages = sent
    with httpx.Client() as c:
        for reader, links in ((READERS[0], [0, 0, 2]), (READERS[1], [0])):
            for i in links:
                c.get(tracked(server, messages[reader])[i])
    common = ["--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")]
    r = runner.invoke(app, ["report", str(folder / "issues" / "clicks.yaml"), "--out", str(folder / "r.html"),
                            *common], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "style.css?n=" in line or "clicked a link" in line]
    assert [re.sub(r"\s+", " ", line.strip(" │|")) for line in lines] == [
        "readers who clicked a link │ 2 │ 66.67%",
        f"{server.url}/style.css?n=1 │ 3 (2 unique) │ 66.67%",
        f"{server.url}/style.css?n=2&b=3 │ 0 (0 unique) │ 0.00%",
        f"{server.url}/style.css?n=3 │ 1 (1 unique) │ 33.33%"]
    page = (folder / "r.html").read_text(encoding="utf-8")
    assert "Clicks per link" in page and "clicks (% of sent)" in page
    archive = runner.invoke(app, ["report", "--out", str(folder / "a.html"), *common], env={"COLUMNS": "200"})
    assert archive.exit_code == 0 and "clicks" in archive.output and "66.67%" in archive.output, archive.output


@pytest.mark.parametrize("sent", ["opens"], indirect=True)
def test_the_open_pixel_counts_opens_apart_and_the_report_says_proxies_inflate_them(sent):
    server, folder, url, messages = sent
    pixels = [re.findall(re.escape(server.url) + r'/o/[^"]+', parts(m)[0]) for m in messages.values()]
    assert all(len(p) == 1 for p in pixels)
    with httpx.Client() as c:
        first = c.get(pixels[0][0])
        assert first.status_code == 200 and first.headers["content-type"] == "image/gif"
        c.get(pixels[0][0])
        c.get(pixels[1][0])
        assert c.head(pixels[2][0]).status_code == 200  # a HEAD: counted apart
        token = pixels[0][0].rsplit("/", 1)[1]
        assert c.get(f"{server.url}/c/{token}").status_code == 404  # the pixel's code is no link
        assert c.get(f"{server.url}/o/{token[:-2]}xx").status_code == 404
    store = State(folder / "state", url).audience()
    try:
        pixel = next(c for c in clicks.counts(store.db, "clicks") if c.link == 0)
    finally:
        store.close()
    assert (pixel.clicks, pixel.uniques, pixel.scanners) == (3, 2, 1)
    r = runner.invoke(app, ["report", str(folder / "issues" / "clicks.yaml"), "--out", str(folder / "r.html"),
                            "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "Opens (pixel)" in r.output and "Apple Mail" in r.output, r.output
