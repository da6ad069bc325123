"""Values that become mail headers, merge-field defaults and unsubscribe placeholders (issue 10).

Every header value from the settings or the issue must stay one line however a mail program
reads it: control characters, Unicode line separators and RFC 2047 encoded-words that decode
to them are refused when the file is loaded, with the one-line error naming file, line, field.
A default("…") is judged after its escapes are evaluated; the unsubscribe_url placeholders are
parsed by one parser, so what the settings check accepts is what every message gets.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.compose import compose, load_issue
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.mergefields import fill_url_placeholders, url_placeholders
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from tests.test_schema import GOOD

runner = CliRunner()
TOML = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
UNSUB = 'unsubscribe_url = "https://example.org/unsubscribe?email={{ email }}&token={{ token }}"'


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# Header payloads as TOML basic-string text (escapes are TOML's) and what the error must say.
SMUGGLED = [
    ("crlf", "x\\r\\nReply-To: evil@example.net", "line break"),
    ("lf", "x\\nBcc: evil@example.net", "line break"),
    ("esc", "x\\u001b]0;title\\u0007", "control character"),
    ("del", "x\\u007fy", "control character"),
    ("c1-nel", "x\\u0085y", "line break"),
    ("u2028", "x\\u2028y", "line break"),
    ("u2029", "x\\u2029y", "line break"),
    ("ew-q", "=?utf-8?q?=0D=0AReply-To:_evil@example.net?=", "encoded-word"),
    ("ew-b", f"=?utf-8?b?{_b64(b'x' + bytes([13, 10]) + b'Bcc: evil@example.net')}?=", "encoded-word"),
    ("ew-upper", "Hi =?UTF-8?Q?a=0Ab?= there", "encoded-word"),
    ("ew-split", "=?utf-8?q?a=0D?= =?utf-8?q?=0Ab?=", "encoded-word"),
    ("ew-split-char", f"=?utf-8?b?{_b64(chr(0x2028).encode()[:2])}?= =?utf-8?b?{_b64(chr(0x2028).encode()[2:])}?=",
     "encoded-word"),
    ("ew-latin1-nel", "x=?iso-8859-1?q?=85?=y", "encoded-word"),
    ("ew-nested", "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0A=3F=3D?=", "encoded-word"),
]
# The same, as addresses email-validator accepts (atext allows = ? _): the header rule must catch them.
SMUGGLED_ADDRESSES = [
    ("ew-q", "=?utf-8?q?=0D=0A?=@example.org"),
    ("ew-b", f"=?utf-8?b?{_b64(bytes([13, 10]) + b'Bcc:')}?=@example.org"),
    ("ew-upper", "=?UTF-8?Q?=0A?=@example.org"),
]


@pytest.fixture
def nl(tmp_path: Path, monkeypatch) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "_CJW4IiqhupzGDKnWirXaTdzWAye5DjMVSRk3vY4FUE")
    return tmp_path


def _set(nl: Path, key: str, value: str) -> int:
    """newsletter.toml with key = "value" (replacing the key's line, or added after name): its line."""
    lines = TOML.splitlines()
    at = next((i for i, l in enumerate(lines) if l.startswith(f"{key} =")), None)
    if at is None:
        at = next(i for i, l in enumerate(lines) if l.startswith("name =")) + 1
        lines.insert(at, "")
    lines[at] = f'{key} = "{value}"'
    (nl / "newsletter.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return at + 1


def _one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    for w in words:
        assert w in err[0], (w, err[0])
    return err[0]


# --- item 1: settings that become headers --------------------------------------------------------

@pytest.mark.parametrize("key", ["name", "from_name", "list_id"])
@pytest.mark.parametrize("value, words", [s[1:] for s in SMUGGLED], ids=[s[0] for s in SMUGGLED])
def test_header_settings_refuse_smuggled_lines_in_check(nl, key, value, words):
    line = _set(nl, key, value)
    err = _one_line_error(runner.invoke(app, ["check", "issues/mini.yaml"]), words)
    assert f"newsletter.toml:{line}: {key}: " in err


@pytest.mark.parametrize("key", ["reply_to", "unsubscribe_mailto", "from_email", "test_recipient"])
@pytest.mark.parametrize("value", [s[1] for s in SMUGGLED_ADDRESSES], ids=[s[0] for s in SMUGGLED_ADDRESSES])
def test_address_settings_refuse_encoded_words_in_check(nl, key, value):
    line = _set(nl, key, value)
    err = _one_line_error(runner.invoke(app, ["check", "issues/mini.yaml"]), "encoded-word")
    assert f"newsletter.toml:{line}: {key}: " in err


def test_unsubscribe_url_refuses_a_control_character_http_url_lets_through(nl):
    """DEL is neither whitespace nor below 32: the link goes into List-Unsubscribe as it is."""
    line = _set(nl, "unsubscribe_url", "https://example.org/u?t={{ token }}&x=\\u007f")
    _one_line_error(runner.invoke(app, ["check", "issues/mini.yaml"]), f"newsletter.toml:{line}: unsubscribe_url: ",
                    "control character")


@pytest.mark.parametrize("value", ["CSCP =?utf-8?q?caf=C3=A9?= news", "Café – “quoted” ✉", "A=?B", "50% off?="])
def test_header_settings_keep_ordinary_text(nl, value):
    _set(nl, "from_name", value)
    settings, _ = load_settings(nl / "newsletter.toml")
    assert settings.from_name == value


# --- item 1: subject and preheader of the issue ---------------------------------------------------

# YAML double-quoted text: its escapes are YAML's.
ISSUE_SMUGGLED = [
    ("ew-q", "=?utf-8?q?=0D=0ABcc:_evil@example.net?=", "encoded-word"),
    ("ew-b", f"=?utf-8?B?{_b64(bytes([13, 10]) + b'Bcc: evil@example.net')}?=", "encoded-word"),
    ("ew-split", "=?UTF-8?Q?a=0D?=  =?utf-8?q?=0Ab?=", "encoded-word"),
    ("del", "x\\x7fy", "control character"),
    ("nel", "x\\x85y", "line break"),
    ("u2028", "x\\u2028y", "line break"),
    ("tab", "x\\ty", "control character"),
]


@pytest.mark.parametrize("field, line", [("subject", 1), ("preheader", 2)])
@pytest.mark.parametrize("value, words", [s[1:] for s in ISSUE_SMUGGLED], ids=[s[0] for s in ISSUE_SMUGGLED])
def test_subject_and_preheader_refuse_smuggled_lines_in_check(nl, field, line, value, words):
    old = {"subject": "subject: Hello", "preheader": "preheader: A preview line"}[field]
    (nl / "issues" / "bad.yaml").write_text(GOOD.replace(old, f'{field}: "{value}"'), encoding="utf-8")
    _one_line_error(runner.invoke(app, ["check", "issues/bad.yaml"]), f"bad.yaml:{line}: {field}: ", words)


def test_an_encoded_word_in_a_subject_default_is_refused(nl):
    text = GOOD.replace("subject: Hello", """subject: 'Hi {{ name | default("=?utf-8?q?=0D=0ABcc:_x@example.net?=") }}'""")
    (nl / "issues" / "bad.yaml").write_text(text, encoding="utf-8")
    _one_line_error(runner.invoke(app, ["check", "issues/bad.yaml"]), "bad.yaml:1: subject: ", "encoded-word")


# --- item 3: merge-field defaults, judged after their escapes are evaluated -----------------------

# default("…") as written in a YAML single-quoted scalar (backslashes reach literal_eval as they are).
BAD_DEFAULTS = [
    ("crlf", r"x\r\nBcc: evil@example.net", "line break"),
    ("esc", r"\x1b]0;pwned\x07", "control character"),
    ("del", r"a\x7fb", "control character"),
    ("surrogate", r"\ud800", "invalid character (U+D800)"),
    ("u2028", r"a\u2028b", "line break"),
    ("c1", r"a\x9bb", "control character"),
    ("ew-crlf", "=?utf-8?q?=0D=0ABcc:_x@example.net?=", "encoded-word"),
    ("overlong", "x" * 201, "201 characters"),
    ("bad-escape", r"\x0", "not readable quoted text"),
]
# Where a merge field can stand in the base issue (tests/test_schema.GOOD), and its line there.
DEFAULT_FIELDS = [
    ("subject", "subject: Hello", "subject: 'Hi {f}'", 1),
    ("preheader", "preheader: A preview line", "preheader: 'For {f}'", 2),
    ("title", "title: The Title", "title: 'For {f}'", 4),
    ("intro", "intro: Some *intro*.", "intro: 'Dear {f},'", 5),
    ("sections[0].heading", "  - heading: First", "  - heading: 'For {f}'", 7),
    ("sections[0].body", "    body: Some text.", "    body: 'Dear {f}, see [this](https://example.org/?n={f}).'", 8),
    ("sections[0].image.alt", "      alt: An image", "      alt: 'Photo for {f}'", 11),
    ("sections[0].image.href", "      href: https://example.org/a", "      href: 'https://example.org/a?n={f}'", 12),
    ("sections[0].links[0].label", "      - label: Read it", "      - label: '{f}, read it'", 14),
    ("sections[0].links[0].text", "        text: The story", "        text: 'Story for {f}'", 15),
    ("sections[0].links[0].url", "        url: https://example.org/story",
     "        url: 'https://example.org/story?n={f}'", 16),
]


def _issue_with_default(tmp_path: Path, where: str, default: str) -> Path:
    old, new, _ = next((o, n, ln) for f, o, n, ln in DEFAULT_FIELDS if f == where)
    field = '{{ name | default("' + default + '") }}'
    path = tmp_path / "issues" / "bad.yaml"
    path.write_text(GOOD.replace(old, new.format(f=field)), encoding="utf-8")
    return path


@pytest.mark.parametrize("where, line", [(f[0], f[3]) for f in DEFAULT_FIELDS], ids=[f[0] for f in DEFAULT_FIELDS])
@pytest.mark.parametrize("default, words", [d[1:] for d in BAD_DEFAULTS], ids=[d[0] for d in BAD_DEFAULTS])
def test_bad_default_is_refused_by_compose_in_every_field(nl, settings_of, where, line, default, words):
    path = _issue_with_default(nl, where, default)
    with pytest.raises(NewsletterError) as info:
        compose(path, settings_of, nl)
    err = info.value
    msg = err.format()
    assert (err.field, err.line, err.exit_code) == (where, line, 2), msg
    assert msg.startswith(f"{path}:{line}: {where}: ") and "default(" in msg and words in msg, msg
    assert "\n" not in msg and "\r" not in msg and "\x1b" not in msg


@pytest.fixture
def settings_of(nl):
    return load_settings(nl / "newsletter.toml")[0]


@pytest.mark.parametrize("default, words", [d[1:] for d in BAD_DEFAULTS], ids=[d[0] for d in BAD_DEFAULTS])
def test_bad_default_in_the_subject_fails_check(nl, default, words):
    _issue_with_default(nl, "subject", default)
    _one_line_error(runner.invoke(app, ["check", "issues/bad.yaml"]), "bad.yaml:1: subject: ", "default(", words)


@pytest.mark.parametrize("where", [f[0] for f in DEFAULT_FIELDS])
def test_a_line_break_default_fails_check_in_every_field(nl, where):
    _issue_with_default(nl, where, r"x\r\nBcc: evil@example.net")
    line = next(f[3] for f in DEFAULT_FIELDS if f[0] == where)
    _one_line_error(runner.invoke(app, ["check", "issues/bad.yaml"]), f"bad.yaml:{line}: {where}: ", "line break")


@pytest.mark.parametrize("default", [r"x\r\nBcc: evil@example.net", r"\ud800"], ids=["crlf", "surrogate"])
def test_send_dry_run_with_a_bad_default_sends_nothing(nl, default):
    _issue_with_default(nl, "subject", default)
    (nl / "list.csv").write_text("email,name\nann@example.org,\nbob@example.org,Bob\n", encoding="utf-8")
    result = runner.invoke(app, ["send", "issues/bad.yaml", "--list", "list.csv", "--dry-run"])
    _one_line_error(result, "bad.yaml:1: subject: ", "default(")
    assert "ann@example.org" not in result.stdout
    assert not (nl / "outbox").exists() and not (nl / ".newsletter" / "ledger.sqlite3").exists()


def test_a_default_in_a_link_is_judged_as_part_of_the_link(nl):
    path = _issue_with_default(nl, "sections[0].links[0].url", "a b")
    with pytest.raises(NewsletterError) as info:
        load_issue(path)
    assert info.value.field == "sections[0].links[0].url" and "not an http(s) or mailto link" in info.value.message


@pytest.mark.parametrize("default", ["friend", "", "Année 7 – 🎉", "a \"quoted\" word", "x" * 200, "50% {off}"])
def test_ordinary_defaults_still_compose(nl, settings_of, default):
    path = _issue_with_default(nl, "subject", default.replace('"', '\\"'))
    composed = compose(path, settings_of, nl)
    assert composed.sample()[0] == "Hi " + default


# --- item 2: unsubscribe_url placeholders, one parser -------------------------------------------

SPACINGS = [("{{ email }}", "{{ token }}"), ("{{email}}", "{{token}}"), ("{{  email  }}", "{{token }}"),
            ("{{ email}}", "{{   token}}"), ("{{\temail\t}}", "{{ token\t}}"), ("{{ Email }}", "{{ TOKEN }}")]


@pytest.mark.parametrize("email, token", SPACINGS)
def test_every_spacing_the_settings_accept_is_filled(nl, email, token):
    template = f"https://example.org/u?e={email}&t={token}"
    assert url_placeholders(template) == {"email", "token"}
    _set(nl, "unsubscribe_url", template.replace("\t", "\\t"))
    settings, _ = load_settings(nl / "newsletter.toml")
    filled = fill_url_placeholders(settings.unsubscribe_url, email="a+b@example.org", token="f00d")
    assert filled == "https://example.org/u?e=a%2Bb@example.org&t=f00d"
    result = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert result.exit_code == 0, result.output
    assert "unsubscribe link present, e.g. https://example.org/u?e=reader@example.org&t=TOKEN" in result.stdout
    assert "{{" not in result.stdout.split("unsubscribe link present")[1].splitlines()[0]


def test_fill_url_encodes_values():
    filled = fill_url_placeholders("https://example.org/{{ token }}?e={{email}}", email="a&b=c d@example.org",
                                   token="x/y?z")
    assert filled == "https://example.org/x%2Fy%3Fz?e=a%26b%3Dc%20d@example.org"


@pytest.mark.parametrize("value, words", [
    ('https://example.org/u?e={{ email | default(\\"x\\") }}', "without a default"),
    ("https://example.org/u?e={{ name }}&t={{ token }}", "may use only {{ email }} and {{ token }}"),
    ("https://example.org/u?e={ email }&t={{ token }}", "may use only"),
    ("https://example.org/u?e={{ email }&t={{ token }}", "may use only"),
    ("https://example.org/u?e={{ email }}}", "may use only"),
    ("https://example.org/u?e={{{ email }}", "may use only"),
    ("https://example.org/u?e={{ email.upper() }}", "may use only"),
    ("https://example.org/u?e={% if x %}{{ email }}", "may use only"),
], ids=["default", "unknown", "single-braces", "unclosed", "extra-close", "extra-open", "expression", "jinja-tag"])
def test_unsubscribe_url_placeholders_that_would_stay_literal_are_refused(nl, value, words):
    line = _set(nl, "unsubscribe_url", value)
    _one_line_error(runner.invoke(app, ["check", "issues/mini.yaml"]),
                    f"newsletter.toml:{line}: unsubscribe_url: ", words)
