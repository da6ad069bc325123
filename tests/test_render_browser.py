"""The composed example in a real browser (headless system Chromium via tests/helpers/browser.py).

Everything is measured on the rendered page, not read from the source: email.html as written
(placeholders left in) at 375, 600 and 800 px wide viewports, and web.html at 375 px. Remote
images are blocked by the helper, so image boxes are broken ones (test_layouts_browser.py swaps
in a real image to measure them).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from newsletter_mailer.checks import run_checks
from newsletter_mailer.compose import compose
from newsletter_mailer.output import write_build
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS
from tests.helpers.browser import close_browser, open_page

WIDTHS = (375, 600, 800)

_MEASURE_JS = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}; };
  const d = document.documentElement;
  const containers = Array.from(document.querySelectorAll('body div'))
    .filter((el) => getComputedStyle(el).maxWidth === '600px').map(box);
  const media = Array.from(document.querySelectorAll('.nl-image-top'), (sec) => {
    const cols = Array.from(sec.querySelectorAll(':scope > table > tbody > tr > td > div'));
    const img = sec.querySelector('img');
    return {
      classes: cols.map((c) => c.className),
      section: box(sec),
      img: img ? box(img) : null,
      text_words: sec.innerText.trim().split(/\\s+/).length,
    };
  });
  return {scroll_width: d.scrollWidth, client_width: d.clientWidth, containers, media,
          body_text: document.body.innerText};
}"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    c = compose(EXAMPLE_ISSUE, settings, settings_dir)
    out = tmp_path_factory.mktemp("build") / c.slug
    write_build(c, run_checks(c), out, settings_dir)
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def rendered(built, shots):
    """email.html opened once per width: measurements, plus a full-page screenshot."""
    result = {}
    for width in WIDTHS:
        with open_page(built / "email.html", width) as page:
            m = page.evaluate(_MEASURE_JS)
            m["screenshot"] = shots / f"email-{width}.png"
            page.screenshot(path=str(m["screenshot"]), full_page=True)
            result[width] = m
    yield result
    close_browser()


@pytest.mark.parametrize("width", WIDTHS)
def test_no_horizontal_scroll(rendered, width):
    m = rendered[width]
    assert m["client_width"] == width
    assert m["scroll_width"] <= m["client_width"], m["scroll_width"]


@pytest.mark.parametrize("width", [600, 800])
def test_content_is_600px_wide_on_desktop(rendered, width):
    containers = rendered[width]["containers"]
    assert len(containers) >= 5
    widest = max(c["width"] for c in containers)
    assert widest == pytest.approx(600, abs=0.5)
    # every section is the same 600 px column, centred in the viewport
    for c in containers:
        assert c["width"] == pytest.approx(600, abs=0.5)
        assert c["x"] == pytest.approx((width - 600) / 2, abs=0.5)


def test_content_fills_a_phone(rendered):
    for c in rendered[375]["containers"]:
        assert c["width"] == pytest.approx(375, abs=0.5) and c["x"] == pytest.approx(0, abs=0.5)


def _media(rendered, width):
    """The example's sections are long: each image sits above its text, in one column (issue 13).
    The side-by-side layouts are measured in test_layouts_browser.py."""
    media = rendered[width]["media"]
    assert len(media) == 6  # one per section with an image
    for m in media:
        assert len(m["classes"]) == 1 and "mj-column-per-100" in m["classes"][0], m["classes"]
        assert m["img"] is not None and m["text_words"] > 10
    return media


@pytest.mark.parametrize("width", WIDTHS)
def test_image_sections_are_one_full_column(rendered, width):
    column = min(width, 600)
    for m in _media(rendered, width):
        assert m["section"]["width"] == pytest.approx(column, abs=0.5)
        assert m["section"]["x"] == pytest.approx((width - column) / 2, abs=0.5)
        assert m["img"]["x"] == pytest.approx(m["section"]["x"] + 28, abs=1)  # the text's left edge


def test_rendered_text_holds_the_issue(rendered):
    text = rendered[375]["body_text"]
    assert "View this email in your browser" in text
    assert "It's Not OK - Child Exploitation Awareness Raising Campaign" in text
    assert "Read the briefing: The impact of the coronavirus pandemic on child welfare: physical abuse" in text
    assert "Unsubscribe" in text
    # the preheader is in the page but not visible
    assert "launches 1 October, plus NSPCC briefings" not in text


def test_web_copy_fits_a_phone(built):
    with open_page(built / "web.html", 375) as page:
        m = page.evaluate(_MEASURE_JS)
    assert m["client_width"] == 375 and m["scroll_width"] <= 375, m["scroll_width"]
    assert len(m["media"]) == 6
    assert "View this email in your browser" not in m["body_text"]
    assert "Unsubscribe" not in m["body_text"]


def _png(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize("width", WIDTHS)
def test_screenshots_are_non_trivial_pngs(rendered, width):
    path = rendered[width]["screenshot"]
    assert path.stat().st_size > 20_000
    w, h, pixels = _png(path)
    assert w == width
    assert h > 2000  # the whole issue, full page
    assert len(set(pixels[: len(pixels) // 2])) > 50  # text and colours, not a blank page
