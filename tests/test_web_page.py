"""The web copy as a web page (issue 13): valid HTML5 by the Nu HTML checker, the tags a shared
link's card and a feed reader need, and a page that fits a phone and a desktop in light and dark.

web.html of both example issues and the published site (index and issue pages) go through
`java -jar vnu.jar` (npm vnu-jar in .ci, Java from .ci/install-system.sh). The check skips when
Java or the jar is missing, unless CI is set: in CI a missing checker fails the test.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest

from newsletter_mailer.colour import AA, contrast
from newsletter_mailer.compose import compose
from newsletter_mailer.publish import publish
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT
from tests.helpers.browser import close_browser, open_page
from tests.test_layouts_browser import _COLOURS_JS, _hex, _png

LAYOUTS_ISSUE = ROOT / "issues" / "2020-10-cscp-layouts.yaml"
VNU_JAR = ROOT / ".ci" / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
BASE = "https://example.org/newsletter"


def _vnu() -> list[str]:
    java = shutil.which("java")
    if java and VNU_JAR.is_file():
        return [java, "-jar", str(VNU_JAR)]
    reason = f"the Nu HTML checker needs java and {VNU_JAR} (bash .ci/install-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(reason + ": missing in CI")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    out = tmp_path_factory.mktemp("web")
    paths = {}
    for name, issue in (("example", EXAMPLE_ISSUE), ("layouts", LAYOUTS_ISSUE)):
        paths[name] = out / f"{name}.html"
        paths[name].write_text(compose(issue, settings, settings_dir).web_html, encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    out = tmp_path_factory.mktemp("site") / "site"
    publish(settings, settings_dir, out, drafts=True, today=dt.date(2020, 12, 1))
    return out


def test_the_nu_checker_finds_no_errors_in_web_copies_and_published_pages(built, site):
    pages = sorted(site.rglob("*.html"))
    assert [p.relative_to(site).as_posix() for p in pages] == [
        "2020-09-cscp/index.html", "2020-10-cscp-layouts/index.html", "index.html"]
    files = [*built.values(), *pages]
    run = subprocess.run([*_vnu(), "--errors-only", "--format", "json", *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(run.stderr or run.stdout)
    errors = [(m.get("url", "").rsplit("/", 2)[-2:], m.get("lastLine"), m["message"]) for m in report["messages"]]
    assert errors == [], errors


def test_the_web_copy_is_a_web_page_not_email_markup(built):
    for name, path in built.items():
        raw = path.read_text(encoding="utf-8")
        for email_only in ("<!--[if", "mso-", "xmlns:v", "xmlns:o", "v:roundrect", 'height="auto"', "mj-column"):
            assert email_only not in raw, (name, email_only)
        doc = lxml.html.fromstring(raw)
        assert len(doc.xpath("//main")) == 1 and doc.xpath("//main//h2")
        assert raw.lower().startswith("<!doctype html>")
        assert doc.xpath("//head/style") and re.search(r"@media \(prefers-color-scheme: dark\)", raw)
        # CSS in the stylesheet, not inlined
        assert not [e.tag for e in doc.iter() if e.get("style")], name


def _meta(doc, **attr) -> list[str]:
    (key, value), = attr.items()
    return doc.xpath(f"//head/meta[@{key}=$v]/@content", v=value)


def test_title_description_canonical_cards_and_feed(built):
    doc = lxml.html.parse(str(built["example"])).getroot()
    subject, pre = "CSCP Newsletter - September 2020", "“It’s Not OK” launches 1 October, plus NSPCC briefings, toolkits and safeguarding news"
    assert doc.findtext(".//title") == subject
    assert _meta(doc, name="description") == [pre] == _meta(doc, property="og:description")
    assert doc.xpath("//head/link[@rel='canonical']/@href") == [f"{BASE}/2020-09-cscp/"] == _meta(doc, property="og:url")
    assert _meta(doc, property="og:title") == [subject] == _meta(doc, name="twitter:title")
    first = "https://example.org/images/its-not-ok.png"  # no hero: the first section's image
    assert _meta(doc, property="og:image") == [first] == _meta(doc, name="twitter:image")
    assert _meta(doc, name="twitter:card") == ["summary_large_image"]
    [feed] = doc.xpath("//head/link[@rel='alternate' and @type='application/atom+xml']/@href")
    assert feed == f"{BASE}/feed.xml" and feed in [a.get("href") for a in doc.iter("a")]
    assert f"{BASE}/" in [a.get("href") for a in doc.iter("a")]  # the archive index
    subscribe = [a.get("href") for a in doc.iter("a") if a.get("href", "").endswith("/subscribe")]
    assert subscribe == ["https://example.org/news/subscribe"] * 2  # the example's [web] base_url: nav and footer

    layouts = lxml.html.parse(str(built["layouts"])).getroot()
    [hero] = _meta(layouts, property="og:image")
    assert hero.startswith("https://") and hero == layouts.xpath("//main//img/@src")[0]  # the hero first


def test_the_sign_up_form_is_linked_when_the_app_has_an_address(tmp_path):
    settings, settings_dir = load_settings(EXAMPLE_SETTINGS)
    settings = settings.model_copy(update={"web": settings.web.model_copy(update={"base_url": "https://news.example.org/"})})
    doc = lxml.html.fromstring(compose(EXAMPLE_ISSUE, settings, settings_dir).web_html)
    assert [a.get("href") for a in doc.iter("a") if a.text_content() == "Subscribe"] == \
        ["https://news.example.org/subscribe"] * 2


def test_published_pages_keep_relative_site_links_and_absolute_card_image(site):
    doc = lxml.html.parse(str(site / "2020-09-cscp" / "index.html")).getroot()
    assert [a.get("href") for a in doc.iter("a") if a.text_content() in ("All issues", "More issues of CSCP Newsletter")] \
        == ["../index.html", "../index.html"]
    assert _meta(doc, property="og:image")[0].startswith("https://")


# ------------------------------------------------------------------------------------------------
# in Chromium


@pytest.fixture(scope="module")
def measured(built, tmp_path_factory):
    uri = "data:image/png;base64," + base64.b64encode(_png(340, 170)).decode()
    result = {}
    for name, path in built.items():
        local = tmp_path_factory.mktemp(name) / "web.html"
        local.write_text(re.sub(r'src="https://example\.org/images/[^"]+"', f'src="{uri}"',
                                path.read_text(encoding="utf-8")), encoding="utf-8")
        for width in (375, 1200):
            for scheme in ("light", "dark"):
                with open_page(local, width, color_scheme=scheme) as page:
                    result[name, width, scheme] = page.evaluate("""() => ({
                      scroll_width: document.documentElement.scrollWidth,
                      client_width: document.documentElement.clientWidth,
                      main: document.querySelectorAll('main').length,
                      og: Array.from(document.querySelectorAll('meta[property^="og:"]'), (m) => m.getAttribute('property')),
                      buttons: Array.from(document.querySelectorAll('a.nl-btn'), (a) => a.getBoundingClientRect().height),
                      side: Array.from(document.querySelectorAll('.nl-cols'), (c) => Array.from(c.children, (k) => {
                        const r = k.getBoundingClientRect(); return {x: r.left, y: r.top, width: r.width}; })),
                    })""")
                    result[name, width, scheme]["colours"] = page.evaluate(_COLOURS_JS)
    yield result
    close_browser()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1200])
@pytest.mark.parametrize("name", ["example", "layouts"])
def test_fits_without_horizontal_scroll_and_has_its_landmark_and_cards(measured, name, width, scheme):
    m = measured[name, width, scheme]
    assert m["client_width"] == width and m["scroll_width"] <= width, m["scroll_width"]
    assert m["main"] == 1
    assert {"og:title", "og:description", "og:url", "og:image", "og:type"} <= set(m["og"])
    assert all(h >= 44 for h in m["buttons"]), m["buttons"]


def test_side_by_side_sections_stack_on_a_phone(measured):
    wide, phone = measured["layouts", 1200, "light"]["side"], measured["layouts", 375, "light"]["side"]
    assert len(wide) == len(phone) == 2
    for (pic, text) in wide:
        assert pic["y"] == pytest.approx(text["y"], abs=1) and pic["width"] < text["width"]
    for (pic, text) in phone:
        assert text["y"] > pic["y"] and text["x"] == pytest.approx(pic["x"], abs=1)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["example", "layouts"])
def test_rendered_text_passes_aa_contrast(measured, name, scheme):
    colours = measured[name, 1200, scheme]["colours"]
    assert len(colours) > 20
    low = [(c["text"], c["color"], c["bg"]) for c in colours if contrast(_hex(c["color"]), _hex(c["bg"])) < AA]
    assert not low, low


def test_dark_mode_uses_the_dark_palette(measured):
    light = {c["bg"] for c in measured["layouts", 1200, "light"]["colours"]}
    dark = {c["bg"] for c in measured["layouts", 1200, "dark"]["colours"]}
    assert "rgb(255, 255, 255)" in light and "rgb(255, 255, 255)" not in dark
