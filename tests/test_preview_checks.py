"""The preview shows each check next to the section it concerns, and the email in dark mode
beside light (a copy whose dark rules apply whatever the preview's own colour scheme)."""

from __future__ import annotations

import lxml.html
import pytest

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


LOCAL = MINI_ISSUE.replace("src: https://example.org/a.png", "src: images/a b.png").replace(
    "date: 2020-09-01", "date: 2020-09-01\nhero:\n  src: images/hero.png\n  alt: the banner")


def test_local_images_show_in_the_preview_and_web_copy_while_the_email_keeps_their_address(newsletter_dir):
    """Not online until `publish`: the pages opened from build/ load the files themselves, in
    Chromium; email.html keeps the published address, and a check says so."""
    from tests.test_publish import png

    (newsletter_dir / "issues" / "mini.yaml").write_text(LOCAL, encoding="utf-8")
    (newsletter_dir / "issues" / "images").mkdir()
    for name in ("a b.png", "hero.png"):
        (newsletter_dir / "issues" / "images" / name).write_bytes(png(40, 20))
    settings, _ = load_settings(newsletter_dir / "newsletter.toml")
    c = compose(newsletter_dir / "issues" / "mini.yaml", settings, newsletter_dir)
    checks = run_checks(c)
    paths = write_build(c, checks, newsletter_dir / "build" / "mini", newsletter_dir)
    published = [f"https://example.org/newsletter/mini/images/{n}" for n in ("hero.png", "a%20b.png")]
    email = paths["email.html"].read_text(encoding="utf-8")
    assert all(f'src="{u}"' in email for u in published)
    local = [k for k in checks if k.name == "local-image"]
    assert [(k.level, k.field) for k in local] == [("warning", "hero.src"), ("warning", "sections[0].image.src")]
    assert all(f"only after `newsletter publish` has put it at {u}" in k.message for k, u in zip(local, published))
    with open_page(paths["web.html"], 1000) as page:
        web = page.evaluate("() => Array.from(document.images, i => [i.currentSrc, i.naturalWidth])"
                            ".filter(([s]) => s.includes('/issues/images/'))")
        share = page.evaluate("() => document.querySelector('meta[property=\"og:image\"]').content")
    assert len(web) == 2 and all(src.startswith("file://") and width == 40 for src, width in web), web
    assert share == published[0]  # a shared link's card needs the published address
    with open_page(paths["preview.html"], 1400) as page:
        page.wait_for_function("() => Array.from(document.querySelectorAll('iframe')).every(f => "
                               "f.contentDocument && f.contentDocument.readyState === 'complete')")
        framed = page.evaluate("""() => Array.from(document.querySelectorAll('iframe'), f =>
            Array.from(f.contentDocument.images, i => [i.currentSrc, i.naturalWidth]).filter(([s]) => s.includes('/issues/images/')))""")
    assert len(framed) == 3 and all(len(imgs) == 2 and all(w == 40 for _, w in imgs) for imgs in framed), framed


@pytest.mark.parametrize("issue", ["mini", "example"])
def test_each_frame_is_as_tall_as_its_email_at_most_the_window(newsletter_dir, issue):
    """No frame keeps empty space below its email: a short email's frame fits it (not the
    1600 px it starts at), a long one is the window's height and scrolls inside."""
    from tests.conftest import ROOT

    if issue == "example":
        (newsletter_dir / "issues" / "mini.yaml").write_text(
            (ROOT / "issues" / "2020-09-cscp.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    settings, _ = load_settings(newsletter_dir / "newsletter.toml")
    c = compose(newsletter_dir / "issues" / "mini.yaml", settings, newsletter_dir)
    path = write_build(c, run_checks(c), newsletter_dir / "build", newsletter_dir)["preview.html"]
    with open_page(path, 1400, 900) as page:
        page.wait_for_function("() => Array.from(document.querySelectorAll('iframe')).every(f => "
                               "f.contentDocument && f.contentDocument.readyState === 'complete' && f.style.height)")
        frames = page.evaluate("""() => Array.from(document.querySelectorAll('iframe'), f =>
            [f.getBoundingClientRect().height, f.contentDocument.documentElement.scrollHeight])""")
    for height, content in frames:
        assert height <= 900 and abs(height - min(content + 2, 900 - 48)) <= 2, frames
    if issue == "example":  # side by side, the frames end level: no empty space under the desktop one
        assert len({round(h) for h, _ in frames}) == 1, frames
