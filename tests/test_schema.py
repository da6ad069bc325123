"""Every rule of the issue file (issues/*.yaml) and of newsletter.toml, with its message.

Each bad file must give ONE line that names the file, the line and the field, and
says what is wrong: `path:LINE: field: message (hint)`. The table below lists a bad
snippet, the field and line the error must name, and words the message must hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter_mailer.compose import load_issue
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS

# A valid issue; line numbers below refer to it (line 1 is `subject:`).
GOOD = """\
subject: Hello
preheader: A preview line
date: 2020-09-01
title: The Title
intro: Some *intro*.
sections:
  - heading: First
    body: Some text.
    image:
      src: https://example.org/a.png
      alt: An image
      href: https://example.org/a
    links:
      - label: Read it
        text: The story
        url: https://example.org/story
"""
#  line:  1 subject  2 preheader  3 date  4 title  5 intro  6 sections  7 heading  8 body
#         9 image  10 src  11 alt  12 href  13 links  14 label  15 text  16 url


def edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


# (id, YAML text, field named, line named, words the message must hold)
BAD = [
    # --- for: (who a section or the intro is for)
    ("for-unknown-key", edit("    body: Some text.", "    body: Some text.\n    for: {tag: [parents]}"),
     "sections[0].for.tag", 9, "is not a known key"),
    ("for-empty-tags", edit("    body: Some text.", "    body: Some text.\n    for: {tags: []}"),
     "sections[0].for.tags", 9, "must not be empty"),
    ("for-field-alone", edit("    body: Some text.", "    body: Some text.\n    for: {field: district}"),
     "sections[0].for", 9, "needs one of in: (a list of values) or equals:"),
    ("for-in-alone", edit("    body: Some text.", "    body: Some text.\n    for:\n      in: [a]"),
     "sections[0].for", 10, "need a field"),
    ("for-empty", edit("    body: Some text.", "    body: Some text.\n    for: {}"),
     "sections[0].for", 9, "say who it is for"),
    ("for-tag-field", edit("    body: Some text.", "    body: Some text.\n    for: {field: tags, equals: a}"),
     "sections[0].for.field", 9, "use tags:"),
    ("for-any-empty", edit("    body: Some text.", "    body: Some text.\n    for:\n      any: []"),
     "sections[0].for.any", 10, "must not be empty"),
    ("for-nested-unknown", edit("    body: Some text.",
                                "    body: Some text.\n    for:\n      all:\n        - tags: [a]\n        - fild: x"),
     "sections[0].for.all[1].fild", 12, "is not a known key"),
    ("intro-for-empty-tags", edit("intro: Some *intro*.", "intro: Some *intro*.\nintro_for: {tags_all: []}"),
     "intro_for.tags_all", 6, "must not be empty"),
    ("web-not-bool", edit("    body: Some text.", "    body: Some text.\n    web: maybe"),
     "sections[0].web", 9, "valid boolean"),
    # --- YAML itself
    ("yaml-syntax", edit("title: The Title", "title: [unclosed"), None, 5,
     "YAML syntax error: expected ',' or ']', but got ':', while parsing a flow sequence that starts on line 4"),
    ("yaml-unclosed-quote", edit("title: The Title", 'title: "The Title'), None, 4,
     "YAML syntax error: a quote opened on this line is never closed"),
    ("yaml-indent", edit("date: 2020-09-01", "date: 2020-09-01\n  oops: indented"), None, 4, "YAML syntax error"),
    ("yaml-tab", edit("title: The Title", "\ttitle: The Title"), None, 4, "YAML syntax error"),
    ("duplicate-key", edit("title: The Title", "title: The Title\ntitle: Again"), None, 5,
     "key 'title' is given twice"),
    ("duplicate-key-nested", edit("    body: Some text.", "    body: Some text.\n    body: Again"), None, 9,
     "key 'body' is given twice"),
    ("python-tag", edit("title: The Title", "title: !!python/object/apply:os.system [ls]"), None, 4,
     "could not determine a constructor"),
    ("top-level-list", "- subject: Hello\n- date: 2020-09-01\n", None, 1, "should be a mapping"),
    ("top-level-scalar", "just some words\n", None, 1, "should be a mapping"),
    ("empty-file", "", None, 1, "should be a mapping"),
    # --- unknown keys
    ("unknown-top-key", edit("title: The Title", "titel: The Title"), "titel", 4, "is not a known key"),
    ("misspelt-heading", edit("  - heading: First", "  - heding: First"), "sections[0].heding", 7,
     "is not a known key"),
    ("unknown-image-key", edit("      alt: An image", "      alt: An image\n      width: 300"),
     "sections[0].image.width", 12, "is not a known key"),
    ("unknown-link-key", edit("        text: The story", "        txt: The story"),
     "sections[0].links[0].txt", 15, "is not a known key"),
    # --- required fields and types
    ("missing-subject", edit("subject: Hello\n", ""), "subject", 1, "is required"),
    ("empty-subject", edit("subject: Hello", "subject: ''"), "subject", 1, "must not be empty"),
    ("missing-date", edit("date: 2020-09-01\n", ""), "date", 1, "is required"),
    ("missing-sections", GOOD.split("sections:")[0], "sections", 1, "is required"),
    ("empty-sections", GOOD.split("sections:")[0] + "sections: []\n", "sections", 6, "must not be empty"),
    ("null-sections", GOOD.split("sections:")[0] + "sections:\n", "sections", 6, "should be a list"),
    ("section-not-mapping", GOOD.split("sections:")[0] + "sections:\n  - just words\n", "sections[0]", 7,
     "should be a mapping"),
    ("missing-heading", edit("  - heading: First\n    body: Some text.", "  - body: Some text."),
     "sections[0].heading", 7, "is required"),
    ("missing-body", edit("    body: Some text.\n", ""), "sections[0].body", 7, "is required"),
    ("empty-body", edit("    body: Some text.", "    body: '  '"), "sections[0].body", 8, "must not be empty"),
    ("subject-list", edit("subject: Hello", "subject: [a, b]"), "subject", 1, "should be text, not a list"),
    ("subject-number", edit("subject: Hello", "subject: 42"), "subject", 1, "should be text, not a number"),
    ("title-mapping", edit("title: The Title", "title: {a: 1}"), "title", 4, "should be text, not a mapping"),
    ("links-not-list", edit("    links:\n      - label: Read it\n        text: The story\n"
                            "        url: https://example.org/story\n", "    links: https://example.org\n"),
     "sections[0].links", 13, "should be a list"),
    ("link-missing-text", edit("        text: The story\n", ""), "sections[0].links[0].text", 14, "is required"),
    ("draft-not-bool", edit("title: The Title", "title: The Title\ndraft: perhaps"), "draft", 5, "boolean"),
    # --- dates
    ("impossible-date", edit("date: 2020-09-01", "date: 2020-02-30"), "date", 3, "date"),
    ("date-wrong-format", edit("date: 2020-09-01", "date: 1 September 2020"), "date", 3, "YYYY-MM-DD"),
    ("date-number", edit("date: 2020-09-01", "date: 20200901"), "date", 3, "YYYY-MM-DD"),
    # --- one-line header fields
    ("subject-lf", edit("subject: Hello", 'subject: "Hello\\nBcc: x@example.org"'), "subject", 1, "one line"),
    ("subject-cr", edit("subject: Hello", 'subject: "Hello\\rthere"'), "subject", 1, "one line"),
    ("subject-block", edit("subject: Hello", "subject: |\n  two\n  lines"), "subject", 1, "one line"),
    ("preheader-lf", edit("preheader: A preview line", 'preheader: "A\\nB"'), "preheader", 2, "one line"),
    ("title-crlf", edit("title: The Title", 'title: "A\\r\\nB"'), "title", 4, "one line"),
    ("heading-lf", edit("  - heading: First", '  - heading: "Fir\\nst"'), "sections[0].heading", 7, "one line"),
    # --- images
    ("image-missing-alt", edit("      alt: An image\n", ""), "sections[0].image.alt", 10, "is required"),
    ("image-src-javascript", edit("      src: https://example.org/a.png", "      src: javascript:alert(1)"),
     "sections[0].image.src", 10, "http(s)"),
    ("image-src-data", edit("      src: https://example.org/a.png", "      src: 'data:image/png;base64,AAAA'"),
     "sections[0].image.src", 10, "http(s)"),
    ("image-src-mailto", edit("      src: https://example.org/a.png", "      src: mailto:a@example.org"),
     "sections[0].image.src", 10, "http(s)"),
    ("image-src-merge-field", edit("      src: https://example.org/a.png", "      src: 'https://example.org/{{ name }}.png'"),
     "sections[0].image.src", 10, "without merge fields"),
    ("image-href-javascript", edit("      href: https://example.org/a", "      href: javascript:alert(1)"),
     "sections[0].image.href", 12, "is not an http(s) or mailto link"),
    # --- link URLs
    ("link-javascript", edit("        url: https://example.org/story", "        url: javascript:alert(1)"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    ("link-javascript-caps", edit("        url: https://example.org/story", "        url: ' JavaScript:alert(1)'"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    ("link-data", edit("        url: https://example.org/story", "        url: 'data:text/html,<b>x</b>'"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    ("link-vbscript", edit("        url: https://example.org/story", "        url: vbscript:msgbox(1)"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    ("link-relative", edit("        url: https://example.org/story", "        url: /story"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    ("link-no-host", edit("        url: https://example.org/story", "        url: https:///story"),
     "sections[0].links[0].url", 16, "has no host"),
    ("link-space", edit("        url: https://example.org/story", "        url: https://example.org/a b"),
     "sections[0].links[0].url", 16, "is not an http(s) or mailto link"),
    # --- links inside Markdown
    ("md-javascript", edit("    body: Some text.", "    body: 'See [this](javascript:alert(1)).'"),
     "sections[0].body", 8, "javascript:alert(1)"),
    ("md-javascript-entity", edit("    body: Some text.", "    body: 'See [this](&#106;avascript:alert(1)).'"),
     "sections[0].body", 8, "is not an http(s) or mailto link"),
    ("md-data-image", edit("    body: Some text.", "    body: '![x](data:image/png;base64,AAAA)'"),
     "sections[0].body", 8, "data:"),
    ("md-vbscript-reference", edit("    body: Some text.", "    body: |\n      See [this][r].\n\n      [r]: vbscript:x"),
     "sections[0].body", 8, "vbscript:"),
    ("md-javascript-autolink", edit("    body: Some text.", "    body: 'See <javascript:alert(1)>'"),
     "sections[0].body", 8, "javascript:"),
    ("md-intro-javascript", edit("intro: Some *intro*.", "intro: '[x](javascript:alert(1))'"),
     "intro", 5, "is not an http(s) or mailto link"),
    # --- Jinja beyond merge fields
    ("jinja-if", edit("    body: Some text.", "    body: '{% if name %}Hi{% endif %}'"),
     "sections[0].body", 8, "only merge fields"),
    ("jinja-attribute", edit("subject: Hello", "subject: 'Hi {{ user.name }}'"), "subject", 1, "{{ user.name }}"),
    ("jinja-filter", edit("  - heading: First", "  - heading: '{{ name | upper }}'"),
     "sections[0].heading", 7, "{{ name | upper }}"),
    ("jinja-comment", edit("title: The Title", "title: 'The {# note #} Title'"), "title", 4, "{# note #}"),
    ("jinja-expression", edit("        text: The story", "        text: '{{ 7*7 }}'"),
     "sections[0].links[0].text", 15, "only merge fields"),
    ("jinja-in-url", edit("        url: https://example.org/story", "        url: 'https://example.org/{% raw %}'"),
     "sections[0].links[0].url", 16, "only merge fields"),
    ("jinja-in-alt", edit("      alt: An image", "      alt: '{{ name | default(x) }}'"),
     "sections[0].image.alt", 11, "only merge fields"),
    ("jinja-in-label", edit("      - label: Read it", "      - label: '{% set x = 1 %}'"),
     "sections[0].links[0].label", 14, "only merge fields"),
    # --- issue 13: layouts, buttons, hero
    ("layout-unknown", edit("    body: Some text.", "    body: Some text.\n    layout: image-bottom"),
     "sections[0].layout", 9, "image-left"),
    ("layout-needs-image", GOOD.split("    image:")[0] + "    layout: image-left\n", "sections[0].layout", 9,
     "'image-left' needs an image"),
    ("layout-text-only-hides-image", edit("    body: Some text.", "    body: Some text.\n    layout: text-only"),
     "sections[0].layout", 9, "text-only would hide the section's image"),
    ("button-without-url", edit("    body: Some text.", "    body: Some text.\n    button:\n      label: Book"),
     "sections[0].button.url", 10, "is required"),
    ("button-javascript", edit("    body: Some text.", "    body: Some text.\n    button:\n      label: Book\n"
                                                      "      url: javascript:alert(1)"),
     "sections[0].button.url", 11, "is not an http(s) or mailto link"),
    ("button-label-lf", edit("    body: Some text.", "    body: Some text.\n    button:\n      label: \"Bo\\nok\"\n"
                                                    "      url: https://example.org/"),
     "sections[0].button.label", 10, "one line"),
    ("hero-missing-alt", edit("date: 2020-09-01", "date: 2020-09-01\nhero:\n  src: https://example.org/h.png"),
     "hero.alt", 5, "is required"),
    ("hero-src-javascript", edit("date: 2020-09-01", "date: 2020-09-01\nhero:\n  src: javascript:x\n  alt: A"),
     "hero.src", 5, "http(s)"),
]


def _load(tmp_path: Path, text: str | bytes, name: str = "issue.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> NewsletterError:
    with pytest.raises(NewsletterError) as info:
        load_issue(path)
    return info.value


def test_the_base_issue_and_the_example_are_valid(tmp_path):
    issue = load_issue(_load(tmp_path, GOOD))
    assert issue.subject == "Hello" and issue.sections[0].links[0].label == "Read it"
    example = load_issue(EXAMPLE_ISSUE)
    assert len(example.sections) >= 10


@pytest.mark.parametrize("text, field, line, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_issue_names_file_line_and_field(tmp_path, text, field, line, words):
    path = _load(tmp_path, text)
    err = _error(path)
    msg = err.format()
    assert "\n" not in msg and "\r" not in msg, msg
    assert err.path == str(path), msg
    assert err.field == field, msg
    assert err.line == line, msg
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert msg.startswith(prefix), msg
    assert words in msg, msg
    assert err.exit_code == 2
    assert "Traceback" not in msg and "pydantic" not in msg.lower() and "errors.pydantic.dev" not in msg


def test_table_covers_every_model_field():
    """Every key of every model appears somewhere in the bad-snippet table."""
    from newsletter_mailer.schema import Image, Issue, Link, Section

    named = " ".join(str(b[2]) + " " + b[1] for b in BAD)
    for model in (Issue, Section, Image, Link):
        for key, info in model.model_fields.items():
            key = info.alias or key
            assert key in named, f"{model.__name__}.{key} has no bad example"


def test_misspelt_key_is_reported_not_the_missing_real_one(tmp_path):
    msg = _error(_load(tmp_path, edit("  - heading: First", "  - heding: First"))).format()
    assert "heding" in msg and "not a known key" in msg
    assert "check the spelling" in msg


def test_several_problems_are_counted_on_the_one_line(tmp_path):
    text = edit("subject: Hello", "subject: ''").replace("date: 2020-09-01", "date: 2020-13-01")
    msg = _error(_load(tmp_path, text)).format()
    assert "(+1 more problem:" in msg and "\n" not in msg


@pytest.mark.parametrize("raw, line, words", [
    (b"subject: caf\xe9\ndate: 2020-09-01\n", 1, "is not UTF-8"),
    (b"subject: Hello\ndate: 2020-09-01\nsections:\n  - heading: H\xff\n", 4, "is not UTF-8"),
    (b"subject: Hello\ndate: 2020\x00-09-01\n", 2, "NUL byte"),
], ids=["latin1", "latin1-line4", "nul"])
def test_bytes_that_are_not_utf8_text(tmp_path, raw, line, words):
    path = _load(tmp_path, raw)
    err = _error(path)
    assert err.format().startswith(f"{path}:{line}: ")
    assert words in err.format() and "UTF-8" in err.format()


def test_missing_issue_file(tmp_path):
    err = _error(tmp_path / "nope.yaml")
    assert err.format() == f"{tmp_path / 'nope.yaml'}: file not found (check the path)"


def test_utf8_bom_and_crlf_line_ends_are_fine(tmp_path):
    raw = b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode("utf-8")
    assert load_issue(_load(tmp_path, raw)).title == "The Title"


def test_empty_alt_marks_a_decorative_image(tmp_path):
    issue = load_issue(_load(tmp_path, edit("      alt: An image", "      alt: ''")))
    assert issue.sections[0].image.alt == ""


@pytest.mark.parametrize("where, value", [
    ("subject", "Hello {{ name }}"),
    ("subject", "Hello {{name}}"),
    ("subject", 'Hello {{ name | default("friend") }}'),
    ("subject", "Hello {{ name | default('friend') }}"),
    ("subject", "For {{ school_year | default(\"all years\") }} and {{ email }}"),
    ("body", "Dear {{ name | default(\"reader\") }}, see [this](https://example.org/?e={{ email }})."),
    ("url", "https://example.org/survey?e={{ email }}&y={{ school_year }}"),
    ("url", "mailto:{{ email }}"),
    ("alt", "Photo for {{ name }}"),
    ("label", "{{ name | default(\"Reader\") }}, read it"),
])
def test_merge_fields_are_allowed_in_content(tmp_path, where, value):
    lines = {"subject": "subject: Hello", "body": "    body: Some text.",
             "url": "        url: https://example.org/story", "alt": "      alt: An image",
             "label": "      - label: Read it"}
    old = lines[where]
    new = old.split(":", 1)[0] + ": " + "'" + value.replace("'", "''") + "'"
    load_issue(_load(tmp_path, edit(old, new)))


def test_markdown_raw_html_is_allowed_in_the_file(tmp_path):
    """Raw HTML is not an error: it is shown as text (see test_compose)."""
    load_issue(_load(tmp_path, edit("    body: Some text.", "    body: 'a <script>alert(1)</script> b'")))


# ----------------------------------------------------------------------------------------------
# newsletter.toml

GOOD_TOML = EXAMPLE_SETTINGS.read_text(encoding="utf-8")


def _toml_line(text: str, startswith: str) -> int:
    """The last line that starts with `startswith` (a duplicate key is reported where it repeats)."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if line.startswith(startswith)]
    assert found, startswith
    return found[-1]


def _settings_error(tmp_path: Path, text: str | bytes) -> tuple[Path, NewsletterError]:
    path = tmp_path / "newsletter.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(NewsletterError) as info:
        load_settings(path)
    return path, info.value


def _toml_edit(old: str, new: str) -> str:
    assert GOOD_TOML.count(old) == 1, old
    return GOOD_TOML.replace(old, new)


def test_example_settings_are_valid():
    settings, folder = load_settings(EXAMPLE_SETTINGS)
    assert settings.language == "en-GB" and folder == EXAMPLE_SETTINGS.parent


BAD_TOML = [
    ("toml-syntax", ('name = "CSCP Newsletter"', 'name = "CSCP Newsletter'), None, "name =",
     "TOML syntax error"),
    ("toml-duplicate", ('name = "CSCP Newsletter"', 'name = "CSCP Newsletter"\nname = "Again"'), None,
     "name =", "TOML syntax error"),
    ("unknown-key", ('name = "CSCP Newsletter"', 'name = "CSCP Newsletter"\nnmae = "x"'), "nmae", "nmae",
     "is not a known key"),
    ("unknown-brand-key", ('primary_color = "#4a2a7a"', 'primary_colour = "#4a2a7a"'),
     "brand.primary_colour", "primary_colour", "is not a known key"),
    ("bad-colour", ('primary_color = "#4a2a7a"', 'primary_color = "purple"'), "brand.primary_color",
     "primary_color", "is not a colour like #1a2b3c"),
    ("bad-colour-hex", ('link_color = "#1a5fa8"', 'link_color = "#1a5fa"'), "brand.link_color",
     "link_color", "is not a colour"),
    ("bad-from-email", ('from_email = "newsletter@example.org"', 'from_email = "newsletter.example.org"'),
     "from_email", "from_email", "not a valid email address"),
    ("bad-unsubscribe-scheme", ('unsubscribe_mailto = "unsubscribe@example.org"',
                                'unsubscribe_url = "javascript:alert(1)"\nunsubscribe_mailto = "unsubscribe@example.org"'),
     "unsubscribe_url", "unsubscribe_url", "is not an http(s) or mailto link"),
    ("unsubscribe-not-personal", ('unsubscribe_mailto = "unsubscribe@example.org"',
                                  'unsubscribe_url = "https://example.org/unsubscribe"\nunsubscribe_mailto = "unsubscribe@example.org"'),
     "unsubscribe_url", "unsubscribe_url", "must include {{ email }} or {{ token }}"),
    ("unsubscribe-other-field", ('unsubscribe_mailto = "unsubscribe@example.org"',
                                 'unsubscribe_url = "https://example.org/u?n={{ name }}&t={{ token }}"\nunsubscribe_mailto = "unsubscribe@example.org"'),
     "unsubscribe_url", "unsubscribe_url", "may use only {{ email }} and {{ token }}"),
    ("bad-web-base-url", ('web_base_url = "https://example.org/newsletter"', 'web_base_url = "example.org/newsletter"'),
     "web_base_url", "web_base_url", "http(s)"),
    ("web-base-url-mailto", ('web_base_url = "https://example.org/newsletter"', 'web_base_url = "mailto:a@example.org"'),
     "web_base_url", "web_base_url", "must be an http(s) address"),
    ("bad-language", ('language = "en-GB"', 'language = "English"'), "language", "language", "language tag"),
    ("postal-address-lf", ('postal_address = "Cumbria', 'postal_address = "Line one\\nCumbria'),
     "postal_address", "postal_address", "one line"),
    ("name-wrong-type", ('name = "CSCP Newsletter"', "name = 12"), "name", "name", "should be text"),
    ("font-injection", ('font_family = "Helvetica, Arial, sans-serif"', 'font_family = "Arial; } body { color: red"'),
     "brand.font_family", "font_family", "may hold only"),
    ("bad-provider", ('provider = "outbox"', 'provider = "carrier-pigeon"'), "delivery.provider", "provider",
     "outbox"),
    ("logo-without-alt", ('logo_alt = "Cumbria Safeguarding Children Partnership"', 'logo_alt = " "'),
     "brand.logo_alt", "logo_alt", "is required when logo_url is set"),
    ("logo-not-https", ('logo_url = "https://example.org/images/cscp-logo.png"', 'logo_url = "images/logo.png"'),
     "brand.logo_url", "logo_url", "http(s)"),
    ("dark-bad-colour", ("# link = \"#8fb4e6\"", 'link = "blue"'), "brand.dark.link", "link =", "is not a colour"),
    ("dark-unknown-key", ("# link = \"#8fb4e6\"", 'links = "#ffffff"'), "brand.dark.links", "links =",
     "is not a known key"),
    ("footer-link-javascript", ('url = "https://example.org/"', 'url = "javascript:alert(1)"'),
     "footer_links[0].url", "url = \"javascript", "is not an http(s) or mailto link"),
    ("footer-link-merge-field", ('url = "https://example.org/"', 'url = "https://example.org/?e={{ email }}"'),
     "footer_links[0].url", "url = \"https://example.org/?e", "without merge fields"),
]


@pytest.mark.parametrize("change, field, line_start, words", [b[1:] for b in BAD_TOML],
                         ids=[b[0] for b in BAD_TOML])
def test_bad_settings_name_file_line_and_field(tmp_path, change, field, line_start, words):
    text = _toml_edit(*change)
    path, err = _settings_error(tmp_path, text)
    msg = err.format()
    line = _toml_line(text, line_start)
    assert "\n" not in msg, msg
    assert err.path == str(path) and err.field == field and err.line == line, msg
    assert msg.startswith(f"{path}:{line}: " + (f"{field}: " if field else "")), msg
    assert words in msg, msg
    assert err.exit_code == 2


def test_missing_required_setting_names_the_field(tmp_path):
    text = "\n".join(l for l in GOOD_TOML.splitlines() if not l.startswith("postal_address"))
    path, err = _settings_error(tmp_path, text)
    assert err.format() == f"{path}: postal_address: is required"


def test_settings_file_not_found(tmp_path):
    with pytest.raises(NewsletterError) as info:
        load_settings(tmp_path / "missing.toml")
    msg = info.value.format()
    assert msg.startswith(f"{tmp_path / 'missing.toml'}: settings file not found")
    assert "newsletter init" in msg and info.value.exit_code == 2


def test_settings_not_utf8(tmp_path):
    path, err = _settings_error(tmp_path, GOOD_TOML.encode("utf-8").replace(b"Carlisle", b"Carl\xefsle"))
    assert err.format().startswith(f"{path}:{_toml_line(GOOD_TOML, 'postal_address')}: is not UTF-8")


def test_settings_nul_byte(tmp_path):
    path, err = _settings_error(tmp_path, GOOD_TOML.replace("[brand]", "[brand]\x00"))
    assert err.format().startswith(f"{path}:{_toml_line(GOOD_TOML, '[brand]')}: contains a NUL byte")


def test_layout_defaults_to_image_top_with_an_image_and_text_only_without(tmp_path):
    issue = load_issue(_load(tmp_path, GOOD + "  - heading: Second\n    body: More.\n"))
    assert [s.layout for s in issue.sections] == ["image-top", "text-only"]


def test_logo_alt_may_be_left_out_without_a_logo(tmp_path):
    text = "\n".join(l for l in GOOD_TOML.splitlines() if not l.startswith(("logo_url", "logo_alt")))
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    assert load_settings(path)[0].brand.logo_url is None


def test_new_fields_are_in_the_json_schema():
    from newsletter_mailer.schema import json_schema

    defs = json_schema()["$defs"]
    assert defs["Section"]["properties"]["layout"]["anyOf"][0]["enum"] == [
        "image-left", "image-right", "image-top", "text-only"]
    assert set(defs["Button"]["required"]) == {"label", "url"}
    assert "hero" in json_schema()["properties"]
