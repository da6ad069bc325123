"""The report page finished (issue 21): one colour per series on every chart (Okabe–Ito, 3:1 against
the card), Gmail's 0.3% line drawn even for one issue, headers over their numbers, unique ids and
0 Nu checker errors, wording as a person writes it, dark mode and a print stylesheet; measured in
Chromium at 375 and 1200 px in light and dark."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from newsletter_mailer.colour import AA, contrast
from newsletter_mailer.report import charts
from tests.helpers.browser import open_page
from tests.test_layouts_browser import _COLOURS_JS, _hex
from tests.test_report import as_sendgrid, cli, fill_store, nl, send  # noqa: F401  (nl is a fixture)
from tests.test_web_page import _vnu

GRAPHICS = 3.0  # WCAG 1.4.11: a chart's lines and bars against what they are drawn on


@pytest.fixture
def pages(nl: Path) -> dict[str, Path]:  # noqa: F811
    """mini's page (funnel, timeline with a complaint, trend of two issues) and the archive page."""
    send(nl, "older")
    send(nl, "mini")
    fill_store(nl)
    as_sendgrid(nl)
    out = {"issue": nl / "mini.html", "archive": nl / "all.html"}
    assert cli(nl, "report", str(nl / "issues" / "mini.yaml"), "--out", str(out["issue"])).exit_code == 0
    assert cli(nl, "report", "--out", str(out["archive"])).exit_code == 0
    return out


_CHARTS_JS = """() => Array.from(document.querySelectorAll('figure svg'), (svg) => {
  const card = getComputedStyle(svg.closest('figure')).backgroundColor;
  const legend = Array.from(svg.querySelectorAll('[id*="activate-serie-"]'), (g) => [
      g.querySelector('text').textContent, getComputedStyle(g.querySelector('rect')).fill]);
  const texts = Array.from(svg.querySelectorAll('text:not(.value)'), (t) => getComputedStyle(t).fill);
  const values = Array.from(svg.querySelectorAll('text.value'), (t) => [getComputedStyle(t).fill,
      getComputedStyle(svg.querySelector('.plot .series rect')).fill]);  // printed on the funnel's one-colour bars
  const gmail = Array.from(svg.querySelectorAll('.series > title')).filter((t) => t.textContent.includes('0.3%'))
      .map((t) => t.parentElement.querySelector('path.line').getBoundingClientRect().width);
  return {caption: svg.closest('figure').querySelector('figcaption').textContent, card, legend, texts, values, gmail,
          width: svg.getBoundingClientRect().width};
})"""
_HEADERS_JS = """() => Array.from(document.querySelectorAll('table'), (t) => {
  const head = t.querySelectorAll('thead th'), row = t.querySelector('tbody tr');
  if (!head.length || !row || getComputedStyle(t.querySelector('thead')).position === 'absolute') return [];
  return Array.from(head).slice(1).map((th, i) => { const td = row.children[i + 1];
    return [th.textContent, getComputedStyle(th).textAlign, th.getBoundingClientRect().right,
            td.getBoundingClientRect().right]; });
}).flat()"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1200])
def test_the_page_in_light_and_dark(pages, width, scheme, tmp_path):
    for name, path in pages.items():
        with open_page(path, width, color_scheme=scheme) as page:
            page_bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
            colours = page.evaluate(_COLOURS_JS)
            drawn = page.evaluate(_CHARTS_JS)
            headers = page.evaluate(_HEADERS_JS)
            ids = page.evaluate("() => Array.from(document.querySelectorAll('[id]'), (e) => e.id)")
            sideways = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
            page.screenshot(path=str(tmp_path / f"{name}-{width}-{scheme}.png"), full_page=True)
        dark_page = contrast(_hex(page_bg), "#000000") < contrast(_hex(page_bg), "#ffffff")
        assert dark_page == (scheme == "dark"), (name, page_bg)
        low = [c for c in colours if contrast(_hex(c["color"]), _hex(c["bg"])) < AA]
        assert low == [], (name, low)
        assert sideways <= 0 and len(ids) == len(set(ids)), (name, sideways, ids)
        assert drawn, name
        for chart in drawn:
            for fill in chart["texts"]:  # axis labels, legends, values: AA on the card
                assert contrast(_hex(fill), _hex(chart["card"])) >= AA, (chart["caption"], fill)
            for fill, bar in chart["values"]:  # a value printed on its bar: AA on the bar
                assert contrast(_hex(fill), _hex(bar)) >= AA, (chart["caption"], fill, bar)
            for series, fill in chart["legend"]:
                assert contrast(_hex(fill), _hex(chart["card"])) >= GRAPHICS, (chart["caption"], series, fill)
        if width == 1200:  # each numeric column's header ends where its numbers end
            assert headers and all(align == "right" and abs(th - td) < 1 for _, align, th, td in headers), headers
    series: dict[str, set[str]] = {}
    for chart in drawn:
        for name_, fill in chart["legend"]:
            series.setdefault(name_, set()).add(fill)
    assert all(len(fills) == 1 for fills in series.values()), series


def test_one_colour_per_series_across_charts_and_gmails_line_drawn(pages):
    """mini's timeline charts a complaint and the trend charts complaints: the same colour on both;
    the archive page with mini alone still draws Gmail's line across its chart."""
    with open_page(pages["issue"], 1200) as page:
        drawn = page.evaluate(_CHARTS_JS)
    fills: dict[str, set[str]] = {}
    for chart in drawn:
        for name, fill in chart["legend"]:
            fills.setdefault(name.rstrip("s").replace("complained", "complaint"), set()).add(fill)
    assert fills["complaint"] == {"rgb(184, 125, 0)"}, fills  # Okabe–Ito orange, darkened for 3:1
    assert len(set.union(*fills.values())) == len(fills) - sum(1 for n in fills if n in ("unsubscribed", "bounced")), fills
    one = charts.trend([("mini", __import__("datetime").date(2020, 9, 1), 12, 1 / 12, 0.0, 1 / 12)])
    assert "the dashed red line" in one.desc and "1 issue," in one.desc
    path = one.svg.split(charts.GMAIL_TITLE)[1]
    points = re.search(r'<path d="M([^"]+)"', path).group(1)
    assert len(re.findall(r"[\d.]+ [\d.]+", points)) >= 2, points  # a line, not a lone point


def test_the_report_has_no_nu_checker_errors(pages):
    run = subprocess.run([*_vnu(), "--errors-only", "--format", "json", *map(str, pages.values())],
                         capture_output=True, text=True, timeout=300)
    messages = json.loads(run.stderr or run.stdout)["messages"]
    assert [(m["url"].rsplit("/", 1)[-1], m["message"]) for m in messages] == []


def test_the_wording_is_a_persons(pages):
    html = pages["issue"].read_text(encoding="utf-8")
    assert re.search(r"report made \d{1,2} [A-Z][a-z]+ \d{4}, \d\d:\d\d UTC", html), html[:2000]
    assert "issue dated 1 September 2020" in html
    assert "in the first hour" in html
    assert not re.search(r"\(s\)|per minute|\d{4}-\d\d-\d\dT", html)


def test_the_wording_helpers():
    from newsletter_mailer.report import wording
    import datetime as dt

    assert wording.per_minute(1200.0) == "1,200 a minute" and wording.per_minute(4.0) == "4 a minute"
    assert wording.per_minute(4.5) == "4.5 a minute" and wording.per_minute(None) == "—"
    assert wording.first(1, "hour") == "the first hour" and wording.first(3, "day") == "the first 3 days"
    assert wording.moment(dt.datetime(2026, 12, 7, 14, 5, 31, tzinfo=dt.timezone.utc)) == "7 December 2026, 14:05 UTC"


def test_the_page_prints_one_block_per_card(pages):
    with open_page(pages["issue"], 1200) as page:
        page.emulate_media(media="print")
        blocks = page.evaluate("""() => Array.from(document.querySelectorAll('main > section, .cards > section, figure'),
            (e) => [getComputedStyle(e).breakInside, e.getBoundingClientRect().width,
                    Math.max(0, ...Array.from(e.querySelectorAll('svg'), (s) => s.getBoundingClientRect().right
                                              - e.getBoundingClientRect().right))])""")
        pdf = page.pdf(format="A4")
    assert blocks and all(b[0] == "avoid" and b[2] <= 0 for b in blocks), blocks
    assert pdf.startswith(b"%PDF")
