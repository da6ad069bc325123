"""Generated bad input: issue files and subscriber lists made up by hypothesis.

Whatever the input, `compose`, `check` and `send --dry-run` never show a traceback (nor the
CLI's last-resort "internal error", which means a bug): each either works (exit 0) or exits
non-zero with one clear line on stderr, `error: …`, and sends nothing (no outbox folder,
no ledger). The CLI runs in-process (typer's CliRunner) for speed; a few subprocess runs
check that no traceback reaches a real stderr either.

The number of generated inputs per run is printed at the end (run with -s to see it).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE

runner = CliRunner()
COUNTS: Counter = Counter()

FAST = settings(max_examples=int(os.environ.get("NEWSLETTER_GEN_EXAMPLES", "550")), deadline=None,
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                      HealthCheck.data_too_large, HealthCheck.large_base_example])


def scaled(n: int) -> settings:
    """n examples at NEWSLETTER_GEN_EXAMPLES=400; the default (550) and other values scale it."""
    return settings(FAST, max_examples=max(1, int(FAST.max_examples * n / 400)))


# --- the folder and the verdict ----------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "good.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    (tmp_path / "issues" / "needs-house.yaml").write_text(
        MINI_ISSUE.replace("For {{ school_year", "In {{ house }}. For {{ school_year"), encoding="utf-8")
    (tmp_path / "good.csv").write_text("email,name\nann@example.org,Ann\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for var in ("SMTP_HOST", "SENDGRID_API_KEY", "NEWSLETTER_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET", "f1LRVGJZNRw5R-tmjDrQhJ3JeU0ROsRax68pjm97X9c")
    return tmp_path


def verdict(result, folder: Path, command: str) -> None:
    """Works, or one clear error line; never a traceback or an internal error; nothing sent."""
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{command}: uncaught {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in out and "internal error" not in out, out[-2000:]
    err = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 0:
        assert err == [], result.stderr[-2000:]
    else:
        assert len(err) == 1 and err[0].startswith("error: "), f"{command} (exit {result.exit_code}): {result.stderr[-2000:]}"
        assert len(err[0]) < 1200, f"not a clear line: {len(err[0])} characters"
    if command == "send":
        assert not (folder / "outbox").exists()
        assert not (folder / ".newsletter" / "ledger.sqlite3").exists()
    COUNTS[(command, "ok" if result.exit_code == 0 else "error")] += 1


def run(folder: Path, command: str, issue: str, csv_name: str = "good.csv") -> None:
    if command == "compose":
        args = ["compose", issue, "--out", "build/x"]
    elif command == "check":
        args = ["check", issue]
    else:
        args = ["send", issue, "--list", csv_name, "--dry-run"]
    result = runner.invoke(app, args)
    verdict(result, folder, command)
    shutil.rmtree(folder / "build", ignore_errors=True)


# --- strategies: text ---------------------------------------------------------------------------

SPECIAL = list("\x00\x01\x07\x08\x09\x0b\x0c\x0d\x1b\x1f\x7f\x85\xa0\u2028\u2029\u200b\u200e\u200f\u202a\u202b"
               "\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\ufffd\ufffe\uffff\U0001f600\u0301")
FRAGMENTS = [
    "{{ name }}", "{{ 7*7 }}", "{% for x in y %}", "{% endfor %}", "{# comment #}", "{{ name | upper }}",
    "{{ name | default('friend') }}", '{{ x | default("a\\"b") }}', "{{", "}}", "{%", "{{ house }}",
    "{{ email }}", "{{ unsubscribe_url }}", "{{ web_url }}", "{{ config.__class__ }}", "{{ name|default() }}",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[l](javascript:alert(1))",
    "[l](https://example.org/a)", "![i](data:image/png;base64,AAAA)", "<https://example.org>",
    "[r]: vbscript:msgbox", "[x][r]", "&amp;", "&#0;", "&#x202e;", "]]>", "<!--", "-->", "<mj-text>", "</mjml>",
    "`code`", "```\nfence\n```", "* item\n", "1. one\n", "# H\n", "---\n", "> quote\n", "\\", "%", "&", "'", '"',
    "\n\n", "\r\n", "\t", "    indented\n", "|", "*", "_", "~~", "mailto:x@example.org", "http://", "https://",
]
SAFE_FRAGMENTS = [
    "{{ name }}", "{{ name | default('friend') }}", '{{ school_year | default("all") }}', "{{ email }}",
    "{{ web_url }}", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[l](https://example.org/a)",
    "<https://example.org>", "&amp;", "&#x202e;", "]]>", "<!--", "<mj-text>", "</mjml>", "`code`", "**b**", "_i_",
    "\u202e", "\u2066", "\u200f", "\xa0", "é", "\U0001f600", "\\", "%", "&", "'", '"', "|", "}", "{",
    " ", "x", "Hello", "mailto:x@example.org",
]
chars = st.characters(exclude_categories=("Cs",))
printable = st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"))  # YAML reads U+2028/2029 as line breaks
wild_text = st.lists(st.one_of(st.text(chars, max_size=12), st.sampled_from(FRAGMENTS), st.sampled_from(SPECIAL)),
                     max_size=10).map("".join)
safe_text = st.lists(st.one_of(st.text(printable, min_size=1, max_size=12), st.sampled_from(SAFE_FRAGMENTS)),
                     min_size=1, max_size=8).map("".join)
text = st.one_of(safe_text, safe_text, safe_text, safe_text, wild_text)  # mostly valid: rendering sees odd content too
line = st.one_of(safe_text.map(lambda t: t if t.strip() else t + "x"), text)  # a required one-line field
huge = st.builds(lambda piece, n: (piece * (n // max(len(piece), 1) + 1))[:n],
                 st.sampled_from(["x", "lorem ipsum ", "é", "{{ name }} ", "\u202e", "*", "[a](https://e.org) "]),
                 st.integers(1_000, 200_000))
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text,
                   st.dates().map(str), st.sampled_from(["2020-09-01", "2020-02-30", "01/09/2020", "", " "]))
anything = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                        max_leaves=12)
GOOD_URLS = ["https://example.org/x", "http://example.org", "mailto:a@example.org", "https://example.org/{{ email }}",
             "https://example.org/a?b=c&d=<e>\"", "https://example.org/\u202e"]
url = st.one_of(st.sampled_from(GOOD_URLS), st.sampled_from(GOOD_URLS), st.sampled_from([
    "https://example.org/x", "http://example.org", "mailto:a@example.org", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", " javascript:alert(1)", "data:text/html,<b>x</b>", "vbscript:msgbox(1)",
    "https://", "https://exa mple.org", "//example.org/x", "ftp://example.org", "images/a.png", "../a.png",
    "/etc/passwd", "https://example.org/{{ email }}", "https://example.org/\u202e", "file:///etc/passwd",
]), text)


def section():
    return st.fixed_dictionaries(
        {"heading": line, "body": st.one_of(line, huge)},
        optional={"image": st.fixed_dictionaries({"src": url, "alt": text}, optional={"href": url}),
                  "links": st.lists(st.fixed_dictionaries({"text": text, "url": url}, optional={"label": text}),
                                    max_size=3)})


issue_dict = st.fixed_dictionaries(
    {"subject": st.one_of(line, line, huge), "date": st.sampled_from(["2020-09-01", "2021-12-31"]),
     "sections": st.lists(section(), min_size=1, max_size=3)},
    optional={"preheader": text, "title": text, "intro": st.one_of(text, huge), "draft": st.booleans()})


@st.composite
def mutated_issue(draw) -> dict:
    """A plausible issue, then a few random mutations: wrong types, missing and unknown keys."""
    doc = draw(issue_dict)
    for _ in range(draw(st.integers(0, 3))):
        # pick a mapping inside doc to mutate
        targets = [doc] + list(doc.get("sections") or []) if isinstance(doc.get("sections"), list) else [doc]
        target = draw(st.sampled_from([t for t in targets if isinstance(t, dict)] or [doc]))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        keys = list(target)
        if op == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(anything)
        elif op == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(["heding", "subjet", "extra", "sections", "date", "image", "links"]))] = \
                draw(anything)
    return doc


def dump(doc) -> bytes:
    """YAML as a person would write it: characters as they are (control characters escaped)."""
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8")


def dump_escaped(doc) -> bytes:
    """YAML with every non-ASCII character as an escape ("\\u202e", "\\x1b")."""
    return yaml.safe_dump(doc, allow_unicode=False, sort_keys=False).encode("utf-8")


yaml_chars = st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \n\t") + ["subject", "date", "sections", "heading",
                                                                  "body", "- ", ": ", "\n  ", "&a ", "*a", "!!python/object:os.system", "!!binary", "<<: "])
raw_yaml = st.lists(st.one_of(yaml_chars, st.text(chars, max_size=5)), max_size=40).map("".join)


issue_bytes = st.one_of(
    mutated_issue().map(dump),
    issue_dict.map(dump_escaped),
    anything.map(lambda d: yaml.safe_dump(d).encode("utf-8")),
    raw_yaml.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=300),
    mutated_issue().map(dump).flatmap(lambda b: st.tuples(st.just(b), st.binary(min_size=1, max_size=4),
                                                          st.integers(0, max(len(b) - 1, 0)))
                                      .map(lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:])),  # bytes spliced in
    issue_dict.map(dump).map(lambda b: codecs.BOM_UTF8 + b),
    issue_dict.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-16")),
)


# --- issue files -----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
subject: *i
"""


@FAST
@given(raw=issue_bytes, command=st.sampled_from(["check", "compose", "send"]))
@example(raw=BILLION_LAUGHS, command="check")
@example(raw=b"[" * 50_000, command="check")
@example(raw=b"subject: x\ndate: 2020-09-01\nsections:\n  - heading: h\n    body: \"a\\0b\\x1b[31m\"\n", command="compose")
@example(raw=b"subject: \"a\\u2028b\\x85c\"\ndate: 2020-09-01\nsections:\n  - {heading: h, body: b}\n", command="send")
@example(raw=b"subject: x\ndate: 2020-09-01\nsections:\n  - {heading: h, body: \"\\ud800\"}\n", command="compose")
@example(raw=b"subject: x\ndate: 2020-09-01\nsections:\n  - {heading: h, body: '" + b"x" * 300_000 + b"'}\n",
         command="compose")
@example(raw=b"subject: x\ndate: 2020-02-30\nsections: []\n", command="check")
@example(raw=b"\xff\xfe\x00\x00garbage", command="send")
@example(raw=b"!!python/object/apply:os.system ['echo pwned']\n", command="check")
def test_generated_issue_files(folder: Path, raw: bytes, command: str):
    (folder / "issues" / "gen.yaml").write_bytes(raw)
    run(folder, command, "issues/gen.yaml")


@scaled(200)
@given(doc=mutated_issue(), command=st.sampled_from(["check", "compose", "send"]))
def test_generated_issue_structures(folder: Path, doc: dict, command: str):
    """Well-formed YAML of the right overall shape: the schema, the renderer and the checks judge it."""
    (folder / "issues" / "gen.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    run(folder, command, "issues/gen.yaml")


valid_issue = st.fixed_dictionaries(
    {"subject": safe_text.map(lambda t: "S " + t), "date": st.just("2020-09-01"),
     "sections": st.lists(st.fixed_dictionaries(
         {"heading": safe_text.map(lambda t: "H " + t), "body": safe_text.map(lambda t: "B " + t)},
         optional={"links": st.lists(st.fixed_dictionaries({"text": safe_text.map(lambda t: "T " + t),
                                                            "url": st.sampled_from(GOOD_URLS)}), max_size=2),
                   "image": st.fixed_dictionaries({"src": st.sampled_from(GOOD_URLS[:2]), "alt": safe_text},
                                                  optional={"href": st.sampled_from(GOOD_URLS)})}),
         min_size=1, max_size=3)},
    optional={"preheader": safe_text, "title": safe_text, "intro": safe_text})


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "object", "embed", "form", "base"):
            self.bad.append(tag)
        for name, value in attrs:
            if name.startswith("on") or (value or "").strip().lower().startswith(("javascript:", "data:", "vbscript:")):
                self.bad.append(f"{tag} {name}={value}")


@scaled(250)
@given(doc=valid_issue)
def test_generated_valid_issues_render_safely(folder: Path, doc: dict):
    """Odd but valid content (HTML, bidi, Markdown, merge fields) composes; no markup gets through."""
    (folder / "issues" / "gen.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["compose", "issues/gen.yaml", "--out", "build/x"])
    verdict(result, folder, "compose")
    if result.exit_code == 0:
        for name in ("email.html", "web.html"):
            scan = _Tags()
            scan.feed((folder / "build" / "x" / name).read_text(encoding="utf-8"))
            assert scan.bad == [], (name, scan.bad)
    shutil.rmtree(folder / "build", ignore_errors=True)


# --- subscriber lists ----------------------------------------------------------------------------

EMAILS = ["ann@example.org", "ANN@Example.org", "bob@example.org", "no-at-sign", "a@b", "x@localhost",
          "\u202eevil@example.org", "é@example.org", "ann@exämple.org", "a b@example.org", "a@example.org\r\nBcc: x@y",
          '"quoted"@example.org', "a@[127.0.0.1]", "", " ", "<ann@example.org>", "Ann <ann@example.org>",
          "a@example.org;b@example.org", "a" * 70 + "@example.org", "x@" + "d" * 300 + ".org"]
HEADERS = ["email", "Email", " EMAIL ", "name", "Name", "status", "tags", "School Year", "school-year", "school_year",
           "house", "House", "", "e-mail", "email;name", "\ufeffemail", "na\u202eme"]
cell = st.one_of(text, st.sampled_from(EMAILS), st.sampled_from(["subscribed", "Unsubscribed", "bounced", "maybe",
                                                                 "a;b;;c", "Year 7"]),
                 st.sampled_from(["x" * 100_000, "é" * 100_000, "{{ 7*7 }}" * 10_000]))


@st.composite
def csv_bytes(draw) -> bytes:
    header = draw(st.lists(st.one_of(st.sampled_from(HEADERS), text), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(cell, max_size=len(header) + 2), max_size=6))
    style = draw(st.sampled_from(["csv", "csv-all", "raw"]))
    buf = io.StringIO()
    if style == "raw":  # no quoting at all: commas, quotes and line breaks land where they land
        for r in [header, *rows]:
            buf.write(",".join(r) + draw(st.sampled_from(["\n", "\r\n", "\r", ""])))
    else:
        w = csv.writer(buf, quoting=csv.QUOTE_ALL if style == "csv-all" else csv.QUOTE_MINIMAL,
                       lineterminator=draw(st.sampled_from(["\r\n", "\n"])))
        w.writerows([header, *rows])
    data = buf.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "utf-32"]))
    raw = data.encode(encoding, "replace") if encoding not in ("utf-8", "utf-8-sig") else \
        data.encode(encoding, "surrogatepass")
    if draw(st.booleans()) and raw:  # bytes of noise spliced in
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    return raw


@scaled(500)
@given(raw=csv_bytes(), issue=st.sampled_from(["issues/good.yaml", "issues/needs-house.yaml"]))
@example(raw=b"", issue="issues/good.yaml")
@example(raw=b"\xef\xbb\xbf", issue="issues/good.yaml")
@example(raw=b"email,name\nann@example.org,A\x00nn\n", issue="issues/good.yaml")
@example(raw=b"email,name\n\"ann@example.org,Ann\n", issue="issues/good.yaml")
@example(raw="email,name\nann@example.org,Ann\n".encode("utf-16"), issue="issues/good.yaml")
@example(raw=b"email,name\nann@example.org,Ann\xe9\n", issue="issues/good.yaml")
@example(raw=b"email,name,email\nann@example.org,Ann,x\n", issue="issues/good.yaml")
@example(raw=b"email;name\nann@example.org;Ann\n", issue="issues/good.yaml")
@example(raw=b"Email,Name,House\n\"ann@example.org\",\"Ann\r\nBcc: x@example.org\",\"G\r\nX: y\"\n",
         issue="issues/needs-house.yaml")
@example(raw=b"email,name\nann@example.org," + b"x" * 100_000 + b"\n", issue="issues/good.yaml")
@example(raw=b"email,name\nann@example.org," + b"x" * 200_000 + b"\n", issue="issues/good.yaml")
@example(raw=b"email,name\nann@example.org,\"" + b"x" * 5_000_000, issue="issues/good.yaml")
@example(raw=b"email\n" + b"\n" * 1_000_000 + b"ann@example.org\n", issue="issues/good.yaml")  # a million blank lines
@example(raw=b"\n" * 1_000_000, issue="issues/good.yaml")
@example(raw=b"email\n" + b",,,\r\n" * 1000, issue="issues/good.yaml")
def test_generated_subscriber_lists(folder: Path, raw: bytes, issue: str):
    (folder / "gen.csv").write_bytes(raw)
    run(folder, "send", issue, "gen.csv")


@scaled(100)
@given(name=text, house=st.one_of(text, st.sampled_from(["\r\n", "x\ny", "{{ 7*7 }}"])))
def test_generated_values_in_a_subject_merge_field(folder: Path, name: str, house: str):
    """A merge field in the subject gets any value: a line break skips that row, nothing crashes."""
    issue = folder / "issues" / "subject.yaml"
    issue.write_text(MINI_ISSUE.replace("subject: 'Hello {{ name | default(\"friend\") }}'",
                                        "subject: 'Hello {{ name }} of {{ house | default(\"x\") }}'"),
                     encoding="utf-8")
    with open(folder / "gen.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["email", "name", "house"], ["ann@example.org", name, house]])
    run(folder, "send", "issues/subject.yaml", "gen.csv")


# --- a few real processes: nothing reaches a real stderr but one line ----------------------------------


@pytest.mark.parametrize("what, issue_bytes_, csv_bytes_, args", [
    ("invalid UTF-8 issue", b"subject: \xff\xfe\ndate: 2020-09-01\n", None, ["check", "issues/gen.yaml"]),
    ("billion laughs", BILLION_LAUGHS, None, ["compose", "issues/gen.yaml", "--out", "build/x"]),
    ("deep nesting", b"[" * 100_000, None, ["check", "issues/gen.yaml"]),
    ("control characters", b"subject: \"\\x1b[2J\"\ndate: 2020-09-01\nsections:\n - {heading: h, body: b}\n", None,
     ["compose", "issues/gen.yaml", "--out", "build/x"]),
    ("NUL in the list", MINI_ISSUE.encode(), b"email,name\nann@example.org,A\x00\n",
     ["send", "issues/gen.yaml", "--list", "gen.csv", "--dry-run"]),
    ("UTF-16 list", MINI_ISSUE.encode(), "email,name\nann@example.org,Ann\n".encode("utf-16"),
     ["send", "issues/gen.yaml", "--list", "gen.csv", "--dry-run"]),
    ("unterminated quote", MINI_ISSUE.encode(), b"email,name\n\"ann@example.org,Ann\n" + b"x" * 200_000,
     ["send", "issues/gen.yaml", "--list", "gen.csv", "--dry-run"]),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_no_traceback_reaches_a_real_stderr(folder: Path, what, issue_bytes_, csv_bytes_, args):
    (folder / "issues" / "gen.yaml").write_bytes(issue_bytes_)
    if csv_bytes_ is not None:
        (folder / "gen.csv").write_bytes(csv_bytes_)
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_DEBUG"}
    p = subprocess.run([sys.executable, "-m", "newsletter_mailer", *args], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, (what, p.returncode, p.stdout[-500:], p.stderr[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2000:]
    assert not (folder / "outbox").exists() and not (folder / ".newsletter").exists()
    COUNTS[("subprocess", "error")] += 1


def test_zz_report_generated_counts():
    """Not a check: prints how many generated inputs this run fed the CLI (run with -s)."""
    total = sum(COUNTS.values())
    print(f"\nRELIABILITY generated inputs: {total} CLI runs this session: "
          + ", ".join(f"{c} {o}: {n}" for (c, o), n in sorted(COUNTS.items())))
