"""[tracking] clicks and subject tests on an issue with `for:` sections (issue 24): the project's example
issue and list (3 variants), each audience's edition tracked like the whole issue and counted under the
whole issue's link ids, through the real server (tests/helpers/webserver.py); SQLite and PostgreSQL.

What each reader should get comes from a second, untracked send of the same issue and list (its own
SQLite state): the tracked message must be that message with its links through /c/.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from newsletter_mailer import ab_test, tokens
from newsletter_mailer.audience import clicks
from newsletter_mailer.cli import app
from newsletter_mailer.ledger import key
from newsletter_mailer.state import State
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_LIST, EXAMPLE_SETTINGS, use_database
from tests.helpers.webserver import SECRET, start, stop

runner = CliRunner()
SLUG = EXAMPLE_ISSUE.stem
TRACKING = "\n[tracking]\nclicks = true\n"
TEXT_LINK = re.compile(r"https?://[^\s)>\]]+")


def send(folder: Path, *extra: str, database_url: str | None = None, monkeypatch=None
         ) -> dict[str, list[email.message.EmailMessage]]:
    """`newsletter send` of the example issue to folder/list.csv (state in folder/state, or database_url's
    database); every message in the outbox so far, per reader."""
    if monkeypatch is not None:
        use_database(monkeypatch, database_url)
    r = runner.invoke(app, ["send", str(folder / "issues" / EXAMPLE_ISSUE.name), "--list", str(folder / "list.csv"),
                            "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state"),
                            "--outbox", str(folder / "outbox"), "--provider", "outbox", "--yes", *extra])
    assert r.exit_code == 0, r.output
    out: dict[str, list[email.message.EmailMessage]] = {}
    for path in sorted((folder / "outbox" / SLUG).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.setdefault(msg["To"].addresses[0].addr_spec, []).append(msg)
    return out


def newsletter(folder: Path, settings: str, issue: str | None = None) -> Path:
    """folder with the example list, these settings and the example issue (or `issue`'s text)."""
    (folder / "issues").mkdir(parents=True, exist_ok=True)
    (folder / "newsletter.toml").write_text(settings, encoding="utf-8")
    (folder / "issues" / EXAMPLE_ISSUE.name).write_text(issue or EXAMPLE_ISSUE.read_text(encoding="utf-8"),
                                                        encoding="utf-8")
    shutil.copy(EXAMPLE_LIST, folder / "list.csv")
    return folder


def untracked(tmp_path: Path, settings: str, monkeypatch, issue: str | None = None
              ) -> dict[str, email.message.EmailMessage]:
    """What each reader gets without [tracking]: the same issue and list, sent with SQLite state of its own."""
    plain = newsletter(tmp_path / "plain", settings.replace(TRACKING, ""), issue)
    return {r: m[0] for r, m in send(plain, monkeypatch=monkeypatch).items()}


def parts(msg) -> tuple[list[str], list[str]]:
    """(the HTML part's hrefs, the text part's links), in order."""
    body = msg.get_body(("html",)).get_content()
    return ([html.unescape(h) for h in re.findall(r'<a\b[^>]*?\bhref="([^"]*)"', body)],
            TEXT_LINK.findall(msg.get_body(("plain",)).get_content()))


def pairs(msg, plain_msg, prefix: str) -> list[tuple[str, str]]:
    """(tracked link, the link it stands for) of both parts, each once: the tracked message's /c/ links
    against the untracked message's links in the same places."""
    out: dict[str, str] = {}
    for got, want in zip(parts(msg), parts(plain_msg), strict=True):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            if g.startswith(prefix):
                assert out.setdefault(g, w) == w
    return list(out.items())


def counts(folder: Path, url: str | None) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per stored URL: (link id, clicks, uniques, scanners) of each id it is stored under."""
    store = State(folder / "state", url).audience()
    try:
        out: dict[str, list[tuple[int, int, int, int]]] = {}
        for c in clicks.counts(store.db, SLUG):
            if c.link > 0:
                out.setdefault(c.url, []).append((c.link, c.clicks, c.uniques, c.scanners))
        return out
    finally:
        store.close()


def variant_of(folder: Path, url: str | None) -> dict[str, str]:
    """Each reader's variant (whose sections), as the ledger recorded it, by ledger.key."""
    ledger = State(folder / "state", url).ledger()
    try:
        return dict(ledger.db.execute("SELECT email, variant FROM deliveries WHERE issue=?", (SLUG,)).fetchall())
    finally:
        ledger.close()


@pytest.fixture
def sent(tmp_path, database_url, monkeypatch):
    """(server, folder, url, {reader: tracked message}, {reader: untracked message}) after a send of the
    example issue with [tracking] clicks to the example list."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    if database_url:  # the server's state: its environment is copied when it starts
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    folder = tmp_path / "nl"
    server = start(folder, edit=lambda text: text + TRACKING)
    try:
        newsletter(folder, (folder / "newsletter.toml").read_text(encoding="utf-8"))
        plain = untracked(tmp_path, (folder / "newsletter.toml").read_text(encoding="utf-8"), monkeypatch)
        messages = {r: m[0] for r, m in send(folder, database_url=database_url, monkeypatch=monkeypatch).items()}
        assert set(messages) == set(plain)
        yield server, folder, database_url, messages, plain
    finally:
        stop(server)


def one_reader_a_variant(folder: Path, url: str | None, messages) -> dict[str, str]:
    """{variant: a reader of it}, first in the list's order."""
    chosen: dict[str, str] = {}
    variants = variant_of(folder, url)
    for reader in sorted(messages):
        chosen.setdefault(variants[key(reader)], reader)
    return chosen


def test_every_readers_links_go_through_c_and_each_variants_land_on_their_url_counted_once(sent):
    server, folder, url, messages, plain = sent
    prefix = server.url + "/c/"
    readers = one_reader_a_variant(folder, url, messages)
    assert len(readers) == 3  # the example's three audiences: the same test for each
    for reader, msg in messages.items():
        for got, want in zip(parts(msg), parts(plain[reader]), strict=True):
            for g, w in zip(got, want, strict=True):
                if w.startswith(server.url + "/u/"):  # the unsubscribe link: the reader's own, not tracked
                    assert g.startswith(server.url + "/u/"), (reader, g)
                else:  # the web copy and mailto: as written; every other link through /c/
                    own = w.startswith(("mailto:", "https://example.org/newsletter/"))
                    assert (g == w) if own else g.startswith(prefix), (reader, g, w)
        assert {g for g, _ in pairs(msg, plain[reader], prefix)} == set(parts(msg)[1]) & {
            g for g in parts(msg)[0] if g.startswith(prefix)}  # the text part: the same tracked links
    followed: Counter[str] = Counter()
    with httpx.Client() as c:
        for reader in readers.values():
            links = pairs(messages[reader], plain[reader], prefix)
            for link, want in links[:-1]:  # every link but the last: all of them would read as a scanner
                r = c.get(link)
                assert (r.status_code, r.headers.get("location")) == (302, want), reader
                followed[want] += 1
        first, want = pairs(messages[readers["parents"]], plain[readers["parents"]], prefix)[0]
        assert c.get(first).headers.get("location") == want  # the same reader again: a click, not a reader
    got = counts(folder, url)
    assert all(len(ids) == 1 for ids in got.values())  # one link id per URL, whichever edition sent it
    assert {u: got[u][0][1:] for u in followed} == {
        u: (n + (u == want), n, 0) for u, n in followed.items()}
    assert all(ids[0][1:] == (0, 0, 0) for u, ids in got.items() if u not in followed)
    every_link = {w for r in messages for _, w in pairs(messages[r], plain[r], prefix)}
    assert every_link <= set(got)  # stored before the first message: every edition's links


def test_a_link_in_several_editions_is_one_link_id_and_counts_there(sent):
    server, folder, url, messages, plain = sent
    prefix = server.url + "/c/"
    readers = one_reader_a_variant(folder, url, messages)
    links = {v: dict((w, g) for g, w in pairs(messages[r], plain[r], prefix)) for v, r in readers.items()}
    shared = set.intersection(*(set(v) for v in links.values()))
    renumbered = [w for v in links.values() for n, w in enumerate(v, 1)
                  if tokens.read_link_id(v[w].removeprefix(prefix).split(".")[0]) != n]
    assert shared and renumbered  # links in every edition, and links an edition has under the issue's id
    stored = {u: ids[0][0] for u, ids in counts(folder, url).items()}
    for w in shared:
        codes = {v[w].removeprefix(prefix).split(".")[0] for v in links.values()}
        assert {tokens.read_link_id(c) for c in codes} == {stored[w]}  # the code also says its message's count
    w = sorted(shared)[0]
    with httpx.Client() as c:
        for v in links.values():
            assert c.get(v[w]).headers.get("location") == w
    assert counts(folder, url)[w] == [(stored[w], len(links), len(links), 0)]


def test_a_scanner_fetching_every_link_of_a_shorter_edition_is_counted_apart(sent):
    """The burst rule counts the links of the reader's own message (its code says how many), not the
    issue's: a scanner that opens every link of an audience's shorter edition is no reader."""
    server, folder, url, messages, plain = sent
    prefix = server.url + "/c/"
    readers = one_reader_a_variant(folder, url, messages)
    in_issue = len(counts(folder, url))
    short = {v: pairs(messages[r], plain[r], prefix) for v, r in readers.items()}
    variant, links = min(short.items(), key=lambda kv: len(kv[1]))
    assert 2 <= len(links) < in_issue, (variant, len(links), in_issue)
    codes = {tokens.read_link_code(link.removeprefix(prefix).split(".")[0]) for link, _ in links}
    assert {n for _, n in codes} == {len(links)}
    with httpx.Client() as c:
        for link, want in links:
            assert c.get(link).headers.get("location") == want  # redirected: a refused scanner may flag the mail
    got = counts(folder, url)
    assert all(got[w][0][1:] == (0, 0, 1) for _, w in links), {w: got[w] for _, w in links}
    store = State(folder / "state", url).audience()
    try:
        assert clicks.readers_clicking(store.db, SLUG) == 0
    finally:
        store.close()


def test_a_tampered_token_from_an_edition_does_not_redirect_among_good_ones(sent):
    server, folder, url, messages, plain = sent
    from newsletter_mailer.settings import load_settings

    prefix = server.url + "/c/"
    reader = one_reader_a_variant(folder, url, messages)["parents"]
    links = pairs(messages[reader], plain[reader], prefix)
    list_id = State(folder / "state", url).list_ids(load_settings(folder / "newsletter.toml")[0], record=False)[0]
    secret = SECRET.encode()
    flip = lambda s, i: s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]  # noqa: E731
    n, (link, want) = next((n, lw) for n, lw in enumerate(links, 1)
                           if tokens.read_link_id(lw[0].removeprefix(prefix).split(".")[0]) != n)
    code, _, rest = link.removeprefix(prefix).partition(".")
    slug, _, token = rest.rpartition(".")
    assert slug == SLUG  # <code>.<issue>.<reader pseudonym>
    hostile = {
        "code altered": f"{flip(code, 6)}.{slug}.{token}",
        "reader altered": f"{code}.{slug}.{flip(token, 9)}",
        "the edition's own number": f"{tokens.make_link_code(secret, list_id, SLUG, n, want)}.{slug}.{token}",
        "another issue": f"{tokens.make_link_code(secret, list_id, 'other', n, want)}.other."
                         f"{tokens.click_pseudonym_maker(secret, list_id, 'other')(reader)}",
        "another url": f"{tokens.make_link_code(secret, list_id, SLUG, n, 'https://evil.example/')}.{slug}.{token}",
        "truncated": f"{code}.{slug}.{token[:-3]}",
    }
    good = links[:len(hostile)]
    with httpx.Client() as c:
        for (kind, bad), (link_ok, want_ok) in zip(hostile.items(), good, strict=True):
            r = c.get(prefix + bad)
            assert 400 <= r.status_code < 500 and "location" not in r.headers, kind
            assert c.get(link_ok).headers.get("location") == want_ok
    got = counts(folder, url)
    assert sorted(u for u, ids in got.items() if ids[0][1]) == sorted(w for _, w in good)
    assert all(ids[0][1:] == (1, 1, 0) for u, ids in got.items() if ids[0][1])


# The subject holds a merge field; a field only the practitioners' sections use comes before it, so the
# subject's slot is at another place in the other audiences' editions.
PERSONAL = (("subject: \"CSCP Newsletter - September 2020\"",
             "subject: \"CSCP Newsletter for {{ school_year | default('everyone') }}\""),
            ("A new NSPCC Learning briefing", "A new ({{ role | default('colleague') }}) NSPCC Learning briefing"))


def without_links(msg) -> str:
    """The text part with no address in it: the sections the reader got."""
    return TEXT_LINK.sub("", msg.get_body(("plain",)).get_content())


def test_a_subject_test_on_variants_gives_each_reader_their_subject_and_their_sections(tmp_path, database_url,
                                                                                        monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    issue = EXAMPLE_ISSUE.read_text(encoding="utf-8")
    for old, new in PERSONAL:
        assert old in issue
        issue = issue.replace(old, new)
    settings = EXAMPLE_SETTINGS.read_text(encoding="utf-8") + TRACKING
    plain = untracked(tmp_path, settings, monkeypatch, issue)
    folder = newsletter(tmp_path / "nl", settings, issue)
    sample = send(folder, "--ab-subject", "Other subject", "--sample", "60%", database_url=database_url,
                  monkeypatch=monkeypatch)
    ledger = State(folder / "state", database_url).ledger()
    try:
        drawn = ab_test.variants(ledger.db, SLUG)
    finally:
        ledger.close()
    assert set(map(key, sample)) == set(drawn) and set(drawn.values()) == {"A", "B"}
    variants = variant_of(folder, database_url)
    assert len(set(variants.values())) >= 2  # the sample spans audiences
    assert len({str(plain[r]["Subject"]) for r in sample}) >= 2  # and the subject differs by reader
    for reader, msgs in sample.items():
        assert len(msgs) == 1
        want = "Other subject" if drawn[key(reader)] == "B" else plain[reader]["Subject"]
        assert msgs[0]["Subject"] == want, (reader, variants[key(reader)])
        assert without_links(msgs[0]) == without_links(plain[reader]), reader
    everyone = send(folder, "--finish-ab", database_url=database_url, monkeypatch=monkeypatch)
    assert set(everyone) == set(plain) and all(len(m) == 1 for m in everyone.values())  # the rest, once each
    for reader, (msg,) in everyone.items():
        if reader not in sample:  # nobody clicked: no significant difference, the issue's own subject
            assert msg["Subject"] == plain[reader]["Subject"]
            assert without_links(msg) == without_links(plain[reader]), reader
            assert any("/c/" in h for h in parts(msg)[0])
    again = send(folder, "--finish-ab", database_url=database_url, monkeypatch=monkeypatch)
    assert {r: len(m) for r, m in again.items()} == {r: 1 for r in plain}  # nothing twice


# An override of the email template with links only some editions have (none in the whole issue): one for
# readers without the practitioners' sections, one for readers without the parents' section.
EDITION_ONLY = ("{% set heads = sections|map(attribute='heading')|join('|') %}"
                "{% if 'Coronavirus' not in heads %}<p><a href=\"https://example.org/not-practitioners\">More</a></p>"
                "{% endif %}{% if 'Parents in Sport' not in heads %}"
                "<p><a href=\"https://example.org/not-parents\">More</a></p>{% endif %}")


def test_a_link_only_some_editions_have_gets_an_id_after_the_issues_kept_when_the_send_resumes(sent):
    server, folder, url, messages, plain = sent
    from tests.conftest import ROOT

    template = (ROOT / "templates" / "email.mjml.j2").read_text(encoding="utf-8")
    intro = '<mj-text css-class="nl-body">{{ intro_html }}'
    assert intro in template
    (folder / "templates").mkdir()
    (folder / "templates" / "email.mjml.j2").write_text(template.replace(intro, intro + EDITION_ONLY),
                                                        encoding="utf-8")
    prefix, extra = server.url + "/c/", ("https://example.org/not-practitioners", "https://example.org/not-parents")
    rows = (folder / "list.csv").read_text(encoding="utf-8").splitlines(True)
    (folder / "list.csv").write_text("".join(rows[:1] + [r.replace("@", "+again@", 1) for r in rows[1:]]),
                                     encoding="utf-8")  # the same kinds of reader, new addresses
    before = counts(folder, url)
    first = send(folder, database_url=url)
    ids = counts(folder, url)
    assert {u: i for u, i in ids.items() if u not in extra} == before  # the issue's links as they were
    assert sorted(ids[u][0][0] for u in extra) == [len(before) + 1, len(before) + 2]  # appended, one id each
    found = Counter()
    with httpx.Client() as c:
        for reader, (msg,) in first.items():
            if "+again" not in reader:
                continue
            for link in dict.fromkeys(h for h in parts(msg)[0] if h.startswith(prefix)):
                code = link.removeprefix(prefix).split(".")[0]
                for u in extra:
                    if tokens.read_link_id(code) == ids[u][0][0]:
                        assert c.get(link).headers.get("location") == u
                        found[u] += 1
    assert set(found) == set(extra)
    # A resumed send whose list meets the other edition first: each link keeps the id it was sent under.
    rows = (folder / "list.csv").read_text(encoding="utf-8").splitlines(True)
    (folder / "list.csv").write_text("".join(rows[:1] + ["new@example.org,New,,practitioners,\n"] + rows[1:]),
                                     encoding="utf-8")
    (msg,) = send(folder, database_url=url)["new@example.org"]
    assert {u: [i[0] for i in v] for u, v in counts(folder, url).items()} == {
        u: [i[0] for i in v] for u, v in ids.items()}
    sent_ids = {tokens.read_link_id(h.removeprefix(prefix).split(".")[0])
                for h in parts(msg)[0] if h.startswith(prefix)}
    assert ids[extra[1]][0][0] in sent_ids and ids[extra[0]][0][0] not in sent_ids  # a practitioner's edition


def test_a_test_send_of_an_audiences_edition_keeps_its_links_as_written(tmp_path, database_url, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    use_database(monkeypatch, database_url)
    folder = newsletter(tmp_path / "nl", EXAMPLE_SETTINGS.read_text(encoding="utf-8") + TRACKING)
    for who in (["--variant", "parents"], ["--list", str(folder / "list.csv"), "--as", "ben.taylor@example.com"]):
        r = runner.invoke(app, ["test-send", str(folder / "issues" / EXAMPLE_ISSUE.name), "--to", "me@example.org",
                                *who, "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state"),
                                "--outbox", str(folder / "outbox"), "--provider", "outbox"])
        assert r.exit_code == 0, r.output
    messages = [email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                for path in sorted((folder / "outbox" / SLUG / "test").glob("*.eml"))]
    assert len(messages) == 2 and len({len(parts(m)[0]) for m in messages}) == 2  # two audiences' editions
    for msg in messages:
        links = parts(msg)[0] + parts(msg)[1]
        assert "https://example.org/events/its-not-ok" in links and not any("/c/" in h for h in links)
