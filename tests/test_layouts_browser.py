"""Issue 13's layouts, buttons, hero and dark mode, measured in headless Chromium.

Both example issues (the September one, whose long sections use the default image-top, and
issues/2020-10-cscp-layouts.yaml, which uses every layout, buttons and a hero) are composed and
opened at 375, 600 and 1200 px, in light and in dark mode (playwright's color_scheme, which
Chromium exposes as prefers-color-scheme). Remote images are swapped for a 340x170 PNG in a
data: URI, so image boxes are those of a real image, not a broken one.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib

import pytest

from newsletter_mailer.colour import AA, contrast, to_hex
from newsletter_mailer.compose import compose
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT
from tests.helpers.browser import close_browser, open_page

LAYOUTS_ISSUE = ROOT / "issues" / "2020-10-cscp-layouts.yaml"
WIDTHS = (375, 600, 1200)
PAD = 28  # the column's side padding

_MEASURE_JS = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const d = document.documentElement;
  const cols = (sec) => Array.from(sec.querySelectorAll(':scope > table > tbody > tr > td > div'));
  const top = Array.from(document.querySelectorAll('.nl-image-top'), (sec) => ({
    section: box(sec), img: box(sec.querySelector('img'))}));
  const side = Array.from(document.querySelectorAll('.nl-side'), (sec) => {
    const c = cols(sec);
    return {layout: sec.classList.contains('nl-image-right') ? 'image-right' : 'image-left',
            classes: c.map((x) => x.className), image_col: box(c[0]), text_col: box(c[1]),
            img: box(c[0].querySelector('img')),
            text_words: c[1].innerText.trim().split(/\\s+/).length};
  });
  const buttons = Array.from(document.querySelectorAll('.nl-btn a'), (a) => ({
    link: box(a), cell: box(a.closest('td')), text: a.innerText}));
  const hero = Array.from(document.querySelectorAll('img'))
    .filter((i) => (i.alt || '').startsWith("It's Not OK: child exploitation")).map(box);
  return {scroll_width: d.scrollWidth, client_width: d.clientWidth, top, side, buttons, hero};
}"""

# Every element that shows text of its own: its colour and the first opaque background behind it.
_COLOURS_JS = """() => {
  const bg = (el) => { for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c)) return c; }
    return 'rgb(255, 255, 255)'; };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    const r = el.getBoundingClientRect();
    if (!own || r.width === 0 || r.height === 0 || getComputedStyle(el).display === 'none') continue;
    out.push({text: el.textContent.trim().slice(0, 40), color: getComputedStyle(el).color, bg: bg(el)});
  }
  return out;
}"""


def _png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes((200, 80, 60)) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _hex(css: str) -> str:
    return to_hex(*(float(x) for x in re.findall(r"[\d.]+", css)[:3]))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """email.html of both issues, images swapped for a real PNG, written to files."""
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    uri = "data:image/png;base64," + base64.b64encode(_png(340, 170)).decode()
    out = {}
    for name, issue in (("example", EXAMPLE_ISSUE), ("layouts", LAYOUTS_ISSUE)):
        html = compose(issue, settings, settings_dir).email_html_with_placeholders()
        path = tmp_path_factory.mktemp(name) / "email.html"
        path.write_text(re.sub(r'src="https://example\.org/images/[^"]+"', f'src="{uri}"', html), encoding="utf-8")
        out[name] = path
    yield out
    close_browser()


@pytest.fixture(scope="module")
def measured(pages):
    result = {}
    for name, path in pages.items():
        for width in WIDTHS:
            for scheme in ("light", "dark"):
                with open_page(path, width, color_scheme=scheme) as page:
                    m = page.evaluate(_MEASURE_JS)
                    m["colours"] = page.evaluate(_COLOURS_JS)
                result[name, width, scheme] = m
    return result


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["example", "layouts"])
def test_no_horizontal_scroll(measured, name, width, scheme):
    m = measured[name, width, scheme]
    assert m["client_width"] == width and m["scroll_width"] <= width, m["scroll_width"]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name, count", [("example", 6), ("layouts", 1)])
def test_image_top_images_fill_the_column(measured, name, count, width):
    column = min(width, 600)
    tops = measured[name, width, "light"]["top"]
    assert len(tops) == count
    for t in tops:
        assert t["section"]["width"] == pytest.approx(column, abs=0.5)
        assert t["img"]["width"] == pytest.approx(column - 2 * PAD, abs=1)
        assert t["img"]["x"] == pytest.approx(t["section"]["x"] + PAD, abs=1)
        assert t["img"]["height"] == pytest.approx(t["img"]["width"] / 2, abs=1)  # aspect ratio kept


def _side(measured, width):
    side = measured["layouts", width, "light"]["side"]
    assert [s["layout"] for s in side] == ["image-left", "image-right"]
    for s in side:
        assert "mj-column-per-34" in s["classes"][0] and "mj-column-per-66" in s["classes"][1], s["classes"]
        assert s["text_words"] > 10
    return side


@pytest.mark.parametrize("width", [600, 1200])
def test_side_by_side_on_desktop(measured, width):
    left = (width - 600) / 2
    for s in _side(measured, width):
        img, text = s["image_col"], s["text_col"]
        assert img["y"] == pytest.approx(text["y"], abs=0.5)
        assert img["width"] == pytest.approx(204, abs=1)  # 34 % of 600
        assert text["width"] == pytest.approx(396, abs=1)  # 66 % of 600
        assert s["img"]["width"] == pytest.approx(170, abs=1)
        if s["layout"] == "image-left":
            assert img["x"] == pytest.approx(left, abs=0.5) and img["x"] + img["width"] <= text["x"] + 0.5
        else:
            assert text["x"] == pytest.approx(left, abs=0.5) and text["x"] + text["width"] <= img["x"] + 0.5


def test_side_by_side_columns_stack_on_a_phone(measured):
    for s in _side(measured, 375):
        img, text = s["image_col"], s["text_col"]
        assert text["y"] >= img["y"] + img["height"] - 0.5  # the image first, for image-right too
        assert img["x"] == pytest.approx(0, abs=0.5) and text["x"] == pytest.approx(0, abs=0.5)
        assert img["width"] == pytest.approx(375, abs=0.5) and text["width"] == pytest.approx(375, abs=0.5)
        assert s["img"]["width"] == pytest.approx(375 - 2 * PAD, abs=1)  # the full column width


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
def test_buttons_are_big_links(measured, width, scheme):
    buttons = measured["layouts", width, scheme]["buttons"]
    assert [b["text"] for b in buttons] == ["Book a webinar", "Get the guidance for clubs", "Email the CSCP team"]
    for b in buttons:
        assert b["link"]["height"] >= 44, b
        # the whole coloured box is the link, not just its words
        for k in ("x", "y", "width", "height"):
            assert b["link"][k] == pytest.approx(b["cell"][k], abs=1), (k, b)


@pytest.mark.parametrize("width", WIDTHS)
def test_hero_is_full_width(measured, width):
    (hero,) = measured["layouts", width, "light"]["hero"]
    column = min(width, 600)
    assert hero["width"] == pytest.approx(column, abs=0.5) and hero["x"] == pytest.approx((width - column) / 2, abs=0.5)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["example", "layouts"])
def test_rendered_text_passes_aa_contrast(measured, name, scheme):
    colours = measured[name, 600, scheme]["colours"]
    assert len(colours) > 20
    low = [(c["text"], c["color"], c["bg"], round(contrast(_hex(c["color"]), _hex(c["bg"])), 2))
           for c in colours if contrast(_hex(c["color"]), _hex(c["bg"])) < AA]
    assert not low, low


def test_dark_mode_changes_the_page(measured):
    light = {c["bg"] for c in measured["layouts", 600, "light"]["colours"]}
    dark = {c["bg"] for c in measured["layouts", 600, "dark"]["colours"]}
    assert "rgb(255, 255, 255)" in light and "rgb(255, 255, 255)" not in dark
