"""Content for each audience: `for:` on sections and intro_for, variants decided per reader,
composed once each, recorded in the ledger, checked, and delivered with each reader's sections."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.state import State

runner = CliRunner()

ISSUE = """\
subject: "Audiences"
date: 2020-09-01
intro: "Hello {{ name | default('reader') }}, the intro."
intro_for: {not_tags: [staff]}
sections:
  - heading: Everyone news
    body: For all.
  - heading: Parents corner
    body: For parents and carers.
    for: {tags: [parents, Carers]}
  - heading: Schools in the north
    body: Both tags.
    for: {tags_all: [schools, north]}
  - heading: Not for practitioners
    body: Everyone but practitioners.
    for: {not_tags: [practitioners]}
  - heading: Years seven and eight
    body: By school year.
    for: {field: School Year, in: ["Year 7", "Year 8"]}
  - heading: Carlisle district
    body: By district.
    for: {field: district, equals: Carlisle}
  - heading: Staff or Penrith parents
    body: A combination.
    for:
      any:
        - tags: [staff]
        - all: [{tags: [parents]}, {field: district, equals: Penrith}]
  - heading: Members only
    body: In every email, never on the web.
    web: false
"""
HEADINGS = ["Everyone news", "Parents corner", "Schools in the north", "Not for practitioners",
            "Years seven and eight", "Carlisle district", "Staff or Penrith parents", "Members only"]

LIST = """\
email,name,tags,School Year,District
ann@example.org,Ann,parents,Year 7,Carlisle
bob@example.org,Bob,practitioners;staff,,
cat@example.org,Cat,schools;north,Year 9,penrith
not-an-address,X,parents,Year 7,Carlisle
dan@example.org,Dan,CARERS; north,year 8,Penrith
eve@example.org,Eve,parents;schools,Year 11,Penrith
fay@example.org,"Fay <b>{{ 7*7 }}</b>",,  Year 7  ,CARLISLE
gone@example.org,Gone,parents,Year 7,Carlisle
gus@example.org,Gus,schools,,
"""
# reader -> (gets the intro, section numbers), worked out by hand from the conditions above
EXPECTED = {
    "ann@example.org": (True, {1, 2, 4, 5, 6, 8}),
    "bob@example.org": (False, {1, 7, 8}),
    "cat@example.org": (True, {1, 3, 4, 8}),
    "dan@example.org": (True, {1, 2, 4, 5, 8}),
    "eve@example.org": (True, {1, 2, 4, 7, 8}),
    "fay@example.org": (True, {1, 4, 5, 6, 8}),
    "gus@example.org": (True, {1, 4, 8}),
}


@pytest.fixture
def folder(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    (newsletter_dir / "issues" / "aud.yaml").write_text(ISSUE, encoding="utf-8")
    (newsletter_dir / "subscribers.csv").write_text(LIST, encoding="utf-8")
    (newsletter_dir / "suppress.txt").write_text("gone@example.org\n", encoding="utf-8")
    return newsletter_dir


def _texts(folder: Path, sub: str = "") -> dict[str, str]:
    out = {}
    for path in sorted((folder / "outbox" / "aud" / sub).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert msg["To"].addresses[0].addr_spec not in out, "mailed twice"
        out[msg["To"].addresses[0].addr_spec] = text + "\n" + html
    return out


def _got(body: str) -> tuple[bool, set[int]]:
    return "the intro." in body, {i + 1 for i, h in enumerate(HEADINGS) if h in body}


def test_each_reader_gets_their_variant_once_and_the_ledger_says_which(folder: Path, database_url, monkeypatch):
    if database_url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    r = runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--suppress", "suppress.txt",
                            "--yes"])
    assert r.exit_code == 0, r.output
    got = {addr: _got(body) for addr, body in _texts(folder).items()}
    assert got == EXPECTED
    assert "invalid: 1 (line 5" in r.output and "suppressed: 1" in r.output
    ledger = State(folder / ".newsletter", database_url).ledger()
    try:
        variants = ledger.variants("aud")
    finally:
        ledger.close()
    assert sum(c["sent"] for c in variants.values()) == 7 and len(variants) == 7  # every reader differs here
    assert "not staff, not practitioners" in variants  # gus: the intro's and one section's conditions
    assert "staff or (parents + district: Penrith)" in variants  # bob: no intro
    st = runner.invoke(app, ["status", "issues/aud.yaml"])
    assert st.exit_code == 0 and "variant not staff, not practitioners: sent 1" in st.output, st.output
    again = runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--suppress", "suppress.txt",
                                "--yes"])
    assert again.exit_code == 0 and "nothing to send" in again.output, again.output


def test_the_plan_counts_readers_per_variant(folder: Path):
    (folder / "subscribers.csv").write_text("email,tags,School Year,District\n"
                                            + "".join(f"p{i}@example.org,parents,,\n" for i in range(3))
                                            + "s@example.org,staff;practitioners,,\n", encoding="utf-8")
    r = runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "variant not staff, parents or carers, not practitioners: 3" in r.output
    assert "variant staff or (parents + district: Penrith): 1" in r.output


def test_the_web_copy_shows_every_section_but_web_false(folder: Path):
    r = runner.invoke(app, ["compose", "issues/aud.yaml", "--out", "build"])
    assert r.exit_code == 0, r.output
    web = (folder / "build" / "web.html").read_text(encoding="utf-8")
    assert all(h in web for h in HEADINGS[:-1]) and "Members only" not in web
    r = runner.invoke(app, ["publish", "--out", "site"])
    assert r.exit_code == 0, r.output
    page = (folder / "site" / "aud" / "index.html").read_text(encoding="utf-8")
    assert all(h in page for h in HEADINGS[:-1]) and "Members only" not in page


def test_a_field_the_list_lacks_is_an_error_at_its_line(folder: Path):
    (folder / "subscribers.csv").write_text("email,tags,School Year\nann@example.org,parents,Year 7\n",
                                            encoding="utf-8")
    r = runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--dry-run"])
    assert r.exit_code == 2
    assert r.output.startswith("error: issues/aud.yaml:22: sections[5].for: field 'district' is not a column "
                               "of subscribers.csv"), r.output
    assert "Traceback" not in r.output and not (folder / "outbox").exists()


def test_an_issue_without_conditions_records_no_variant(folder: Path):
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "subscribers.csv", "--yes"])
    assert r.exit_code == 0, r.output
    db = sqlite3.connect(folder / ".newsletter" / "ledger.sqlite3")
    assert {v for (v,) in db.execute("SELECT variant FROM deliveries")} == {None}
    assert "variant" not in r.output


# --- generated: random condition trees and random rows --------------------------------------

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

TAGS = ["a", "b", "c", "Parents"]
VALUES = ["x", "y", "Year 7"]


def _leaf():
    tags = st.lists(st.sampled_from(TAGS), min_size=1, max_size=3)
    return st.one_of(
        tags.map(lambda t: {"tags": t}), tags.map(lambda t: {"tags_all": t}), tags.map(lambda t: {"not_tags": t}),
        st.tuples(st.sampled_from(["f", "g"]), st.lists(st.sampled_from(VALUES), min_size=1, max_size=2))
        .map(lambda fv: {"field": fv[0], "in": fv[1]}),
        st.tuples(st.sampled_from(["f", "g"]), st.sampled_from(VALUES)).map(lambda fv: {"field": fv[0], "equals": fv[1]}))


CONDITIONS = st.recursive(_leaf(), lambda inner: st.one_of(
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
    st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
    st.tuples(_leaf(), _leaf()).map(lambda ab: {**ab[1], **ab[0]} if not (set(ab[0]) & set(ab[1])) else ab[0])),
    max_leaves=6)


def _holds(c: dict, tags: set[str], fields: dict[str, str]) -> bool:
    """The straightforward reading of the issue format's words, on the YAML as written."""
    low = {t.lower() for t in tags}
    checks = []
    if "tags" in c:
        checks.append(any(t.lower() in low for t in c["tags"]))
    if "tags_all" in c:
        checks.append(all(t.lower() in low for t in c["tags_all"]))
    if "not_tags" in c:
        checks.append(not any(t.lower() in low for t in c["not_tags"]))
    if "field" in c:
        value = fields.get(c["field"], "").strip().lower()
        wanted = c["in"] if "in" in c else [c["equals"]]
        checks.append(value in [w.lower() for w in wanted])
    if "all" in c:
        checks.append(all(_holds(x, tags, fields) for x in c["all"]))
    if "any" in c:
        checks.append(any(_holds(x, tags, fields) for x in c["any"]))
    return all(checks)


ROWS = st.lists(st.tuples(st.sets(st.sampled_from(TAGS + ["A", " b ", "d"]), max_size=4),
                          st.sampled_from(VALUES + ["", " x ", "Y", "z", "year 7"]),
                          st.sampled_from(VALUES + ["", "X "])), min_size=1, max_size=12)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conds=st.lists(st.one_of(st.none(), CONDITIONS), min_size=1, max_size=4), rows=ROWS)
def test_a_readers_sections_are_those_whose_conditions_hold(tmp_path_factory, conds, rows):
    """Through the real CSV reader (tags cell, header names, trimming) and the issue model."""
    import csv

    from newsletter_mailer.schema import Issue
    from newsletter_mailer.subscribers import SubscriberList
    from newsletter_mailer.variants import Audiences

    sections = [{"heading": f"S{i}", "body": "x", **({"for": c} if c is not None else {})}
                for i, c in enumerate(conds)]
    issue = Issue.model_validate({"subject": "s", "date": "2020-09-01", "sections": sections})
    path = tmp_path_factory.mktemp("rows") / "list.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "tags", "F", "g"])
        w.writerow(["broken", "a", "x", "x"])  # hostile rows among the good ones: skipped, never evaluated
        for n, (tags, f_value, g_value) in enumerate(rows):
            w.writerow([f"r{n}@example.org", ";".join(sorted(tags)), f_value, g_value])
            w.writerow(["", "a;b", "x", ""])
    audiences = Audiences(issue)
    readers = list(SubscriberList(path))
    assert len(readers) == len(rows)
    for sub, (tags, f_value, g_value) in zip(readers, rows):
        fields = {"f": f_value, "g": g_value}
        tag_set = {t.strip() for t in tags if t.strip()}
        expected = tuple(i for i, c in enumerate(conds) if c is None or _holds(c, tag_set, fields))
        assert audiences.of(sub).sections == expected, (sub, conds)
        assert audiences.decide(sub.tags, sub.fields).sections == expected
    possible = {v.sections for v in audiences.possible()}
    assert {audiences.of(s).sections for s in readers} <= possible


# --- the preview's switch, in Chromium -------------------------------------------------------


def test_preview_switches_between_every_variant_without_horizontal_scroll(folder: Path):
    from tests.helpers.browser import layout_metrics, open_page

    r = runner.invoke(app, ["compose", "issues/aud.yaml", "--out", "build", "--list", "subscribers.csv"])
    assert r.exit_code == 0, r.output
    assert "variant not staff, not practitioners: 1 reader(s)" in r.output
    page_file = folder / "build" / "preview.html"
    with open_page(page_file, 1280) as page:
        labels = page.locator("#variants label")
        names = page.eval_on_selector_all("main.variant", "ms => ms.map(m => m.dataset.variant)")
        assert labels.count() == len(names) == 7
        for i, addr in enumerate(names):
            labels.nth(i).click()
            shown = page.eval_on_selector_all("main.variant", "ms => ms.filter(m => m.offsetParent !== null)"
                                                              ".map(m => m.dataset.variant)")
            assert shown == [names[i]]
            frame = page.frame_locator(f"#variant-{i + 1} iframe[title$='at 600 px']")
            text = frame.locator("body").inner_text()
            sections = {n + 1 for n, h in enumerate(HEADINGS) if h in text}
            assert sections in [s for _, s in EXPECTED.values()], (names[i], sections)
            assert page.locator(f"#variant-{i + 1} iframe").first.bounding_box()["height"] > 200
    for width in (375, 1280):
        m = layout_metrics(page_file, width)
        assert m["scroll_width"] <= m["client_width"], (width, m)
    # the switch is usable by keyboard and screen readers: axe finds nothing in the page's own markup
    from tests.test_web_axe import WCAG_A_AA, _axe

    with open_page(page_file, 1280, java_script_enabled=True, bypass_csp=True) as page:
        page.keyboard.press("Tab")
        page.keyboard.press("ArrowRight")  # the radio group: the next variant
        assert page.eval_on_selector("#pick-2", "e => e.checked")
        page.evaluate(_axe())
        result = page.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}, "
                               "exclude: [['iframe']]})", WCAG_A_AA)
    assert result["passes"] and not result["violations"], [v["id"] for v in result["violations"]]


def test_an_empty_variant_is_an_error_and_a_section_for_nobody_a_warning(folder: Path):
    only = ISSUE.split("sections:")[0].replace('intro: "Hello', 'intro: "Hi').replace("intro_for: {not_tags: [staff]}\n", "")
    (folder / "issues" / "aud.yaml").write_text(only + """sections:
  - heading: For parents
    body: x
    for: {tags: [parents]}
  - heading: For governors
    body: x
    for: {tags: [governors]}
""", encoding="utf-8")
    r = runner.invoke(app, ["check", "issues/aud.yaml"])
    assert r.exit_code == 1
    assert "ERROR variant 'everyone else' has no sections: some readers would get an empty issue" in r.output
    (folder / "subscribers.csv").write_text("email,tags\nann@example.org,parents\n", encoding="utf-8")
    r = runner.invoke(app, ["check", "issues/aud.yaml", "--list", "subscribers.csv"])
    assert r.exit_code == 0, r.output
    assert "warn section 2 (For governors) matches nobody on subscribers.csv" in r.output
    with open(folder / "subscribers.csv", "a", encoding="utf-8") as f:
        f.write("bob@example.org,staff\n")
    r = runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--yes"])
    assert r.exit_code == 1 and "check failed: variant 'everyone else' has no sections: 1 reader(s) on " \
                                "subscribers.csv would get an empty issue" in r.output, r.output
    assert not (folder / "outbox").exists()


def test_test_send_as_a_reader_sends_their_variant_and_variant_picks_one(folder: Path):
    r = runner.invoke(app, ["test-send", "issues/aud.yaml", "--list", "subscribers.csv", "--as", "dan@example.org",
                            "--to", "me@example.org"])
    assert r.exit_code == 0, r.output
    assert "personalised as dan@example.org, variant not staff, parents or carers" in r.output
    (body,) = _texts(folder, "test").values()
    assert _got(body) == EXPECTED["dan@example.org"]
    for path in (folder / "outbox" / "aud" / "test").glob("*.eml"):
        path.unlink()
    r = runner.invoke(app, ["test-send", "issues/aud.yaml", "--variant", "staff or (parents + district: penrith)",
                            "--to", "me@example.org"])
    assert r.exit_code == 0, r.output
    (body,) = _texts(folder, "test").values()
    assert _got(body) == EXPECTED["bob@example.org"]
    r = runner.invoke(app, ["test-send", "issues/aud.yaml", "--variant", "governors", "--to", "me@example.org"])
    assert r.exit_code == 2 and r.output.startswith("error: --variant: no variant named 'governors'"), r.output
    assert "everyone else" in r.output or "not staff" in r.output


# --- SendGrid: one request's personalizations share one content: batched per variant ----------


def test_sendgrid_requests_are_grouped_by_variant_and_pass_the_contract(folder: Path):
    from tests.helpers.prism import prism_server
    from tests.test_sendgrid_provider import Recorder

    from newsletter_mailer.send import Options, Sender, prepare

    rows = "".join(f"p{i}@example.org,P{i},parents,Year 9,\n" if i % 3 == 0 else
                   f"s{i}@example.org,S{i},staff,,\n" if i % 3 == 1 else f"g{i}@example.org,G{i},schools,,\n"
                   for i in range(30))
    (folder / "subscribers.csv").write_text("email,name,tags,School Year,District\n" + rows, encoding="utf-8")
    with prism_server() as url:
        env = {"SENDGRID_API_KEY": "SG.test", "SENDGRID_API_HOST": url, "NEWSLETTER_BACKOFF_BASE": "0.01",
               "NEWSLETTER_SECRET": "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA"}
        p = prepare(Options(issue=folder / "issues" / "aud.yaml", list_path=folder / "subscribers.csv",
                            provider="sendgrid", sync=False, env=env))
        recorders = [Recorder(p.provider)]
        made = p.provider_for

        def recording(c):
            prov = made(c)
            recorders.append(Recorder(prov))
            return prov

        p.provider_for = recording
        p.provider.batch_size = 4  # several requests a variant, interleaved on the list
        for_each = {}
        sender = Sender(p)
        try:
            summary = sender.run(sender.plan())
        finally:
            sender.close()
    assert summary.sent == 30 and summary.failed == 0 and summary.uncertain == 0
    bodies = [b for rec in recorders for b in rec.bodies]
    assert all(r.status_code == 202 for rec in recorders for r in rec.responses)
    for body in bodies:
        html = body["content"][1]["value"]
        kinds = {p["to"][0]["email"][0] for p in body["personalizations"]}
        assert len(kinds) == 1, kinds  # one variant per request
        got = _got(html)[1]
        for_each.setdefault(kinds.pop(), set()).add(frozenset(got))
        assert len(body["personalizations"]) <= 4
    assert {k: {tuple(sorted(s)) for s in v} for k, v in for_each.items()} == {
        "p": {(1, 2, 4, 8)}, "s": {(1, 4, 7, 8)}, "g": {(1, 4, 8)}}
    assert sum(len(b["personalizations"]) for b in bodies) == 30


# --- killed mid-send: resumed, each reader gets their own variant, once -----------------------


@pytest.mark.slow
def test_a_send_killed_again_and_again_gives_each_reader_their_own_variant_once(folder: Path, database_url):
    import os
    import subprocess
    import sys

    from tests.helpers.sinks import wait_until

    kinds = ["parents", "staff", "schools;north", ""]
    expected_of = {"parents": (True, {1, 2, 4, 8}), "staff": (False, {1, 4, 7, 8}),
                   "schools;north": (True, {1, 3, 4, 8}), "": (True, {1, 4, 8})}
    n = 2400
    tag_of = {f"r{i:05}@example.org": kinds[(i * 7) % 4] for i in range(n)}
    (folder / "subscribers.csv").write_text("email,name,tags,School Year,District\n" + "".join(
        f"{e},R,{t},,\n" for e, t in tag_of.items()), encoding="utf-8")
    env = {**os.environ, "NEWSLETTER_SECRET": "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA"}
    if database_url:
        env["NEWSLETTER_DATABASE_URL"] = database_url
    outbox = folder / "outbox" / "aud"
    args = [sys.executable, "-m", "newsletter_mailer", "send", "issues/aud.yaml", "--list", "subscribers.csv", "--yes"]

    def files() -> int:
        try:
            return sum(1 for _ in os.scandir(outbox))
        except FileNotFoundError:
            return 0

    kills = 0
    for target in (300, 900, 1500):
        proc = subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: files() >= target or proc.poll() is not None, 120, poll=0.005)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=60)
    last = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stdout + last.stderr
    assert kills >= 2
    got: dict[str, tuple[bool, set[int]]] = {}
    for path in outbox.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        addr = msg["To"].addresses[0].addr_spec
        assert addr not in got, f"{addr} mailed twice"
        got[addr] = _got(msg.get_body(("plain",)).get_content())
    ledger = State(folder / ".newsletter", database_url).ledger()
    try:
        rows = {r.email: r.status for r in ledger.rows("aud")}
        variants = ledger.variants("aud")
    finally:
        ledger.close()
    assert set(rows) == set(tag_of)
    sent = {e for e, s in rows.items() if s == "sent"}
    assert sent <= set(got) and set(got) - sent <= {e for e, s in rows.items() if s == "uncertain"}
    for addr, sections in got.items():
        assert sections == expected_of[tag_of[addr]], addr
    assert sum(c["sent"] + c["uncertain"] for c in variants.values()) == n and len(variants) == 4


def test_report_counts_per_variant(folder: Path):
    assert runner.invoke(app, ["send", "issues/aud.yaml", "--list", "subscribers.csv", "--yes"]).exit_code == 0
    r = runner.invoke(app, ["report", "issues/aud.yaml", "--out", "report.html"])
    assert r.exit_code == 0, r.output
    assert "Variants (ledger)" in r.output and "not staff, not practitioners" in r.output
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "Variants (ledger)" in page and "staff or (parents + district: Penrith)" in page


def test_the_json_schema_stays_valid_and_accepts_the_example():
    import jsonschema
    import yaml

    from newsletter_mailer.schema import json_schema
    from tests.conftest import EXAMPLE_ISSUE

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(ISSUE.replace("2020-09-01", "'2020-09-01'"))
    assert not list(validator.iter_errors(data))
    example = yaml.safe_load(EXAMPLE_ISSUE.read_text(encoding="utf-8"))
    example["date"] = str(example["date"])
    assert not list(validator.iter_errors(example))
    bad = dict(data, sections=[dict(data["sections"][1], **{"for": {"tag": ["x"]}})])
    assert list(validator.iter_errors(bad))  # an unknown key in for: is refused by editors too
