"""Images off (issue 21): with every image request blocked, each image's alt text is drawn in the
brand font at a readable size, in a colour with AA contrast on what it sits on; the header logo's
alt text is bold and in the header's on-primary colour. Measured in headless Chromium, light and
dark, on both example issues; a screenshot of each is taken as it would be seen.
"""

from __future__ import annotations

import pytest

from newsletter_mailer.colour import AA, contrast
from newsletter_mailer.compose import compose
from newsletter_mailer import palette
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS
from tests.helpers.browser import close_browser, open_page
from tests.test_layouts_browser import LAYOUTS_ISSUE, _hex

MIN_PX = 14

_ALTS_JS = """() => {
  const bg = (el) => { for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (c && c !== 'transparent' && !/rgba\\(.*,\\s*0\\)$/.test(c)) return c; }
    return 'rgb(255, 255, 255)'; };
  return Array.from(document.images, (img) => { const s = getComputedStyle(img);
    return {alt: img.alt, loaded: img.complete && img.naturalWidth > 0, family: s.fontFamily,
            size: parseFloat(s.fontSize), weight: parseInt(s.fontWeight, 10), color: s.color, bg: bg(img),
            height: img.getBoundingClientRect().height}; });
}"""


def _block_images(route) -> None:
    if route.request.resource_type == "image":
        route.abort("blockedbyclient")
    else:
        route.fallback()


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    out = tmp_path_factory.mktemp("images-off")
    result = {}
    for name, issue in (("example", EXAMPLE_ISSUE), ("layouts", LAYOUTS_ISSUE)):
        path = out / f"{name}.html"
        path.write_text(compose(issue, settings, sdir).email_html_with_placeholders(), encoding="utf-8")
        for scheme in ("light", "dark"):
            with open_page(path, 600, color_scheme=scheme) as page:
                page.route("**/*", _block_images)
                page.reload(wait_until="load")
                result[name, scheme] = page.evaluate(_ALTS_JS)
                page.screenshot(path=str(out / f"{name}-{scheme}.png"), full_page=True)
    yield settings, result
    close_browser()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["example", "layouts"])
def test_alt_text_is_styled_when_images_are_blocked(seen, name, scheme):
    settings, result = seen
    brand_font = settings.brand.font_family.split(",")[0].strip().strip("'\"")
    images = result[name, scheme]
    assert len(images) >= 4, images
    for img in images:
        assert not img["loaded"], img  # the image really is off
        assert img["alt"] and img["height"] > 0, img  # its alt text takes room on the page
        assert img["family"].split(",")[0].strip().strip("'\"") == brand_font, img
        assert img["size"] >= MIN_PX, img
        assert contrast(_hex(img["color"]), _hex(img["bg"])) >= AA, img


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_logos_alt_text_is_bold_on_primary(seen, scheme):
    settings, result = seen
    colours = (palette.light if scheme == "light" else palette.dark)(settings.brand)
    [logo] = [i for i in result["example", scheme] if i["alt"] == settings.brand.logo_alt]
    assert logo["weight"] >= 700, logo
    assert _hex(logo["bg"]) == colours.primary.lower(), logo
    assert _hex(logo["color"]) == colours.on_primary.lower(), logo
