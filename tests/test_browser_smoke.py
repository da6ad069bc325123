"""Smoke test of tests/helpers/browser.py: a real headless Chromium renders a
responsive two-column layout and the helpers report what it did."""

from __future__ import annotations

import pytest

from tests.helpers.browser import boxes, layout_metrics, open_page, screenshot

HTML = """<!doctype html>
<html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smoke</title>
<style>
  html, body { margin: 0; padding: 0; font-family: "DejaVu Sans", Arial, sans-serif; }
  .container { max-width: 600px; margin: 0 auto; }
  .row { display: flex; }
  .col { flex: 1 1 50%; box-sizing: border-box; padding: 12px; min-height: 80px; }
  .col:first-child { background: #def; }
  .col:last-child { background: #fed; }
  @media (max-width: 599px) {
    .row { display: block; }
    .col { width: 100%; }
  }
</style></head>
<body><div class="container">
  <h1>Issue 1</h1>
  <div class="row">
    <div class="col">First column with some words in it.</div>
    <div class="col">Second column with some words in it.</div>
  </div>
  <img src="https://example.invalid/tracker.png" alt="" width="1" height="1">
</div></body></html>
"""


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("browser") / "smoke.html"
    path.write_text(HTML, encoding="utf-8")
    return path


def test_narrow_viewport_stacks_columns_without_horizontal_scroll(page_file):
    metrics = layout_metrics(page_file, 375)
    assert metrics["client_width"] == 375
    assert metrics["scroll_width"] <= metrics["client_width"], metrics
    first, second = boxes(page_file, 375, ".col")
    assert second["y"] > first["y"]
    assert first["width"] == pytest.approx(375, abs=1)


@pytest.mark.parametrize("width", [600, 800])
def test_wide_viewport_puts_columns_side_by_side(page_file, width):
    metrics = layout_metrics(page_file, width)
    assert metrics["scroll_width"] <= metrics["client_width"], metrics
    first, second = boxes(page_file, width, ".col")
    assert second["y"] == first["y"]
    assert second["x"] >= first["x"] + first["width"] - 1
    assert first["width"] + second["width"] == pytest.approx(600, abs=1)


def test_open_page_evaluate_and_screenshot(page_file, tmp_path):
    with open_page(page_file, 600) as page:
        assert page.evaluate("document.title") == "smoke"
        # the remote image was blocked, not fetched
        assert page.evaluate("document.images[0].naturalWidth") == 0
    png = screenshot(page_file, 375, tmp_path / "smoke.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
