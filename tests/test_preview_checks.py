"""The preview shows each check next to the section it concerns, and the email in dark mode
beside light (a copy whose dark rules apply whatever the preview's own colour scheme)."""

from __future__ import annotations

import lxml.html

from newsletter_mailer import palette
from newsletter_mailer.checks import run_checks
from newsletter_mailer.compose import compose
from newsletter_mailer.output import write_build
from newsletter_mailer.settings import load_settings
from tests.conftest import MINI_ISSUE
from tests.helpers.browser import open_page
from tests.test_layouts_browser import _hex


def _preview(folder):
    (folder / "issues" / "mini.yaml").write_text(MINI_ISSUE.replace("text: Story", "text: click here"), encoding="utf-8")
    settings, _ = load_settings(folder / "newsletter.toml")
    c = compose(folder / "issues" / "mini.yaml", settings, folder)
    out = folder / "build"
    return write_build(c, run_checks(c), out, folder)["preview.html"], settings


def test_checks_sit_next_to_their_section_and_dark_mode_beside_light(newsletter_dir):
    path, _ = _preview(newsletter_dir)
    doc = lxml.html.parse(str(path)).getroot()
    [first] = doc.xpath("//section[@id='checks-section-1']")
    assert first.findtext("h2") == "Section 1: First"
    said = [li.text_content() for li in first.iter("li")]
    assert any("sections[0].links[0].text" in s and "'click here'" in s for s in said), said
    assert not any("click here" in li.text_content() for li in doc.xpath("//ul[@id='checks']/li"))
    dark = doc.get_element_by_id("dark").get("srcdoc")
    assert "@media all" in dark and "prefers-color-scheme" not in dark
    assert "prefers-color-scheme" in doc.get_element_by_id("phone").get("srcdoc")


def test_the_dark_copy_shows_the_dark_palette_in_chromium(newsletter_dir):
    path, settings = _preview(newsletter_dir)
    with open_page(path, 1400, color_scheme="light") as page:
        got = {f: page.evaluate("(id) => getComputedStyle(document.getElementById(id).contentDocument.body)"
                                ".backgroundColor", f) for f in ("phone", "dark")}
    assert _hex(got["dark"]) == palette.dark(settings.brand).background
    assert _hex(got["phone"]) == palette.light(settings.brand).background
