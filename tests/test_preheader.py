"""The hidden preheader: invisible in every client, yet not low-contrast text (SpamAssassin's
HTML_FONT_LOW_CONTRAST scores white text on the light background)."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from newsletter_mailer.checks import run_checks
from newsletter_mailer.compose import compose, load_issue
from newsletter_mailer.output import write_build
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS
from tests.helpers.browser import open_page


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    c = compose(EXAMPLE_ISSUE, settings, settings_dir)
    out = tmp_path_factory.mktemp("build") / c.slug
    write_build(c, run_checks(c), out, settings_dir)
    return out, settings.brand, load_issue(EXAMPLE_ISSUE).preheader


def rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    h = "".join(ch * 2 for ch in h) if len(h) == 3 else h
    return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


def luminance(css_rgb: str) -> float:
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(v) for v in re.findall(r"\d+", css_rgb)[:3])
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def test_the_preheader_is_hidden_in_the_text_colour(built):
    out, brand, preheader = built
    doc = lxml.html.fromstring((out / "email.html").read_bytes())
    [el] = [e for e in doc.iter("div") if (e.text_content() or "").strip() == preheader]
    style = re.sub(r"\s+", "", el.get("style") or "").lower()
    for rule in ("display:none", "max-height:0", "overflow:hidden", "mso-hide:all", "opacity:0",
                 "font-size:1px", f"color:{brand.text_color.lower()}"):
        assert rule in style, (rule, style)
    assert "#ffffff" not in style and brand.background_color.lower() not in style


def test_the_web_copy_carries_the_preheader_as_its_description_not_hidden_text(built):
    """A web page has no inbox line: the preheader is its description (and a shared link's card's),
    so web.html needs no hidden text and no mso-* CSS (the Nu checker rejects both)."""
    out, _, preheader = built
    doc = lxml.html.fromstring((out / "web.html").read_bytes())
    for name in ("description", "twitter:description"):
        assert doc.xpath("//meta[@name=$n]/@content", n=name) == [preheader]
    assert doc.xpath("//meta[@property='og:description']/@content") == [preheader]
    assert preheader not in doc.body.text_content()
    assert "mso-" not in (out / "web.html").read_text(encoding="utf-8")


def test_chromium_hides_the_preheader_and_its_colour_contrasts_with_the_background(built):
    out, brand, preheader = built
    with open_page(out / "email.html", 600) as page:
        got = page.evaluate("""(text) => {
          const el = Array.from(document.querySelectorAll('div')).find(d => d.textContent.trim() === text);
          const s = getComputedStyle(el), r = el.getBoundingClientRect();
          let bg = 'rgba(0, 0, 0, 0)', n = el;
          while (n && n.nodeType === 1 && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
            bg = getComputedStyle(n).backgroundColor; n = n.parentElement; }
          return {display: s.display, color: s.color, bg, height: r.height, width: r.width,
                  visible_text: document.body.innerText.includes(text)};
        }""", preheader)
    assert got["display"] == "none" and got["height"] == 0 and got["width"] == 0
    assert not got["visible_text"]
    assert got["color"] == rgb(brand.text_color) and got["bg"] == rgb(brand.background_color)
    light, dark = sorted((luminance(got["color"]), luminance(got["bg"])), reverse=True)
    assert (light + 0.05) / (dark + 0.05) >= 4.5  # WCAG AA: not low-contrast text
