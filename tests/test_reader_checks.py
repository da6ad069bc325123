"""Issue 13's accessibility and inbox checks: each is made to fail by an issue or settings file of
the test's own, names its section and field, and the example issues pass them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.checks import failures, run_checks
from newsletter_mailer.cli import app
from newsletter_mailer.compose import compose
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, MINI_ISSUE, ROOT

runner = CliRunner()
# The small issue, its one vague link ("link") named: every reader check passes on it.
MINI = MINI_ISSUE.replace("[link](https://example.org/x)", "[the example page](https://example.org/x)")


def _checks(folder: Path, issue: str = MINI, toml: str = ""):
    settings_file = folder / "newsletter.toml"
    if toml:
        settings_file.write_text(settings_file.read_text(encoding="utf-8") + "\n" + toml, encoding="utf-8")
    (folder / "issues" / "mini.yaml").write_text(issue, encoding="utf-8")
    settings, _ = load_settings(settings_file)
    return run_checks(compose(folder / "issues" / "mini.yaml", settings, folder))


def _named(checks, name):
    return [c for c in checks if c.name == name and c.level != "ok"]


@pytest.mark.parametrize("issue", [EXAMPLE_ISSUE, ROOT / "issues" / "2020-10-cscp-layouts.yaml"])
def test_the_example_issues_pass_every_reader_check(issue):
    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    checks = run_checks(compose(issue, settings, sdir))
    names = ("contrast", "headings", "link-text", "alt-text", "all-caps", "image-only", "inbox")
    assert [c for c in checks if c.name in names and c.level != "ok"] == []
    # the documented warnings: its web addresses (web_base_url, [web] base_url) are on example.org
    assert [c.name for c in checks if c.level == "warning"] == ["placeholder", "placeholder"]


def test_mini_issue_passes(newsletter_dir):
    checks = _checks(newsletter_dir)
    assert not [c for c in checks if c.level != "ok" and c.name not in ("unsubscribe", "placeholder")], checks


@pytest.mark.parametrize("old, new, mode, setting", [
    ('link_color = "#1a5fa8"', 'link_color = "#9999ff"', "light", "brand.link_color"),
    ("[brand.dark]\n", '[brand.dark]\ntext = "#444444"\n', "dark", "brand.dark.text"),
    ("[brand.dark]\n", '[brand.dark]\nheading = "#333333"\n', "dark", "brand.dark.heading"),
])
def test_low_contrast_in_light_or_dark_mode_is_an_error(newsletter_dir, old, new, mode, setting):
    path = newsletter_dir / "newsletter.toml"
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    low = _named(_checks(newsletter_dir), "contrast")
    assert low and all(c.level == "error" and c.field == setting for c in low), low
    assert all(c.message.startswith(f"{mode} mode: ") and "WCAG AA needs" in c.message for c in low)


def test_a_skipped_heading_level_is_warned_with_its_section(newsletter_dir):
    issue = MINI.replace("body: For {{", "body: |\n      #### Small print\n\n      For {{")
    [c] = _named(_checks(newsletter_dir, issue), "headings")
    assert c.level == "warning" and c.section == 2 and c.field == "sections[1].body"
    assert "'Small print' skips a level (h4 after h2)" in c.message
    assert c.message.endswith("use ### (an h3) here"), c.message  # the right level, not "one # more or less"


@pytest.mark.parametrize("where, before, after, field", [
    ("body", "[the example page](https://example.org/x)", "[click here](https://example.org/x)", "sections[0].body"),
    ("body", "[the example page](https://example.org/x)", "[https://example.org/x](https://example.org/x)", "sections[0].body"),
    ("links", "text: Story", "text: Read more", "sections[0].links[0].text"),
    ("button", "  - heading: Second\n", "    button: {label: 'Here', url: 'https://example.org/b'}\n"
                                        "  - heading: Second\n", "sections[0].button.label"),
])
def test_link_text_that_says_nothing_is_warned(newsletter_dir, where, before, after, field):
    [c] = _named(_checks(newsletter_dir, MINI.replace(before, after)), "link-text")
    assert c.level == "warning" and c.section == 1 and c.field == field, c


@pytest.mark.parametrize("alt, level, says", [
    ("photo_2020.JPG", "warning", "is a file name"),
    ("Image of a child reading", "warning", "starts with 'image of'"),
    ("picture of the team", "warning", "starts with 'image of'"),
    ("''\n      href: https://example.org/go", "error", "is a link but has no alt text"),
])
def test_bad_alt_text_is_found(newsletter_dir, alt, level, says):
    [c] = _named(_checks(newsletter_dir, MINI.replace("alt: an image", f"alt: {alt}")), "alt-text")
    assert (c.level, c.section, c.field) == (level, 1, "sections[0].image.alt") and says in c.message


def test_an_image_only_section_and_a_long_all_caps_heading_are_warned(newsletter_dir):
    issue = MINI.replace("heading: First", "heading: IMPORTANT NEWS FOR ALL").replace(
        'body: For {{ school_year | default("all years") }}.',
        "image: {src: 'https://example.org/c.png', alt: 'a poster'}\n    body: The poster.")
    checks = _checks(newsletter_dir, issue)
    [caps] = _named(checks, "all-caps")
    [only] = _named(checks, "image-only")
    assert (caps.section, caps.field) == (1, "sections[0].heading")
    assert (only.section, only.field) == (2, "sections[1].body") and "only an image" in only.message


def test_the_inbox_line(newsletter_dir):
    long = "A subject line that goes on and on well past what any inbox shows"
    checks = _checks(newsletter_dir, MINI.replace("""'Hello {{ name | default("friend") }}'""", f"'{long}'")
                     .replace("preheader: A short preview line", f"preheader: '{long}, and more'"))
    assert {(c.field, c.message.split(":")[0]) for c in _named(checks, "inbox")} == {
        ("subject", f"subject is {len(long)} characters"), ("preheader", "preheader")}
    missing = _checks(newsletter_dir, MINI.replace("preheader: A short preview line\n", ""))
    assert [c.field for c in _named(missing, "inbox")] == ["preheader"]


@pytest.mark.parametrize("setting, raised", [("true", True), ('["link-text"]', True), ('["contrast"]', False)])
def test_a_setting_raises_warnings_to_errors(newsletter_dir, setting, raised):
    issue = MINI.replace("text: Story", "text: more")
    checks = _checks(newsletter_dir, issue, f"[checks]\nwarnings_as_errors = {setting}\n")
    [c] = [c for c in checks if c.name == "link-text"]
    assert c.level == ("error" if raised else "warning")
    assert bool(failures(checks)) == raised or setting == "true"


def test_check_exits_non_zero_when_a_raised_warning_fails(newsletter_dir, monkeypatch):
    monkeypatch.chdir(newsletter_dir)
    (newsletter_dir / "issues" / "mini.yaml").write_text(MINI.replace("text: Story", "text: click here"),
                                                        encoding="utf-8")
    assert runner.invoke(app, ["check", "issues/mini.yaml"]).exit_code == 0
    with (newsletter_dir / "newsletter.toml").open("a", encoding="utf-8") as f:
        f.write('\n[checks]\nwarnings_as_errors = ["link-text"]\n')
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code == 1
    assert "ERROR section 1 (sections[0].links[0].text): link text 'click here' says nothing" in r.output
