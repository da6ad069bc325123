"""Real-browser checks with headless Chromium, driven by Playwright (Python).

Uses the system Chromium (``/usr/bin/chromium``, or ``$CHROMIUM_BIN``);
Playwright's own browser download (``playwright install``) is never used.
Every helper calls ``pytest.skip`` with a clear reason when Chromium or the
``playwright`` package is missing.

All network requests are blocked except ``file://`` and ``http://127.0.0.1``
(plus inline ``data:``/``blob:``), so remote images in a newsletter never
hang or leak a request.

One browser process is launched lazily and shared by every call in the test
process (launch costs ~1 s); each page gets a fresh browser context.  Call
``close_browser()`` from a session fixture teardown to stop it early; it is
also closed at interpreter exit.

Example::

    from tests.helpers.browser import open_page, layout_metrics, boxes

    m = layout_metrics(html_file, 375)
    assert m["scroll_width"] <= m["client_width"]
    with open_page(html_file, 600) as page:
        assert page.evaluate("document.title") == "Issue 12"
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_BIN_ENV = "CHROMIUM_BIN"
LAUNCH_ARGS = [
    "--no-sandbox",  # required when running as root (CI containers)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
]
DEFAULT_HEIGHT = 900
PAGE_TIMEOUT_MS = 15_000

_ALLOWED_PREFIXES = ("file://", "http://127.0.0.1:", "http://127.0.0.1/", "data:", "blob:")

_playwright = None
_browser = None


def chromium_path() -> str:
    """Return the Chromium executable, or ``pytest.skip`` if there is none."""
    env = os.environ.get(CHROMIUM_BIN_ENV)
    candidate = env or DEFAULT_CHROMIUM
    if Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return candidate
    if not env:
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        if found:
            return found
    pytest.skip(
        f"Chromium not found ({candidate}); install it with "
        f"`apt-get install chromium` (see .ci/install-system.sh) or set ${CHROMIUM_BIN_ENV}"
    )


def _get_browser():
    global _playwright, _browser
    if _browser is not None and _browser.is_connected():
        return _browser
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Python package `playwright` not installed (pip install playwright); "
                    "do not run `playwright install`, the system Chromium is used")
    if _playwright is None:
        _playwright = sync_playwright().start()
    _browser = _playwright.chromium.launch(
        executable_path=executable, headless=True, args=LAUNCH_ARGS
    )
    return _browser


def close_browser() -> None:
    """Stop the shared browser and Playwright driver (safe to call twice)."""
    global _playwright, _browser
    if _browser is not None:
        with contextlib.suppress(Exception):
            _browser.close()
        _browser = None
    if _playwright is not None:
        with contextlib.suppress(Exception):
            _playwright.stop()
        _playwright = None


atexit.register(close_browser)


def _to_url(path_or_url: str | os.PathLike) -> str:
    text = os.fspath(path_or_url)
    if "://" in text or text.startswith(("data:", "about:")):
        return text
    return Path(text).resolve().as_uri()


def _route(route) -> None:
    if route.request.url.startswith(_ALLOWED_PREFIXES):
        route.continue_()
    else:
        route.abort("blockedbyclient")


@contextlib.contextmanager
def open_page(
    path_or_url: str | os.PathLike,
    width: int,
    height: int = DEFAULT_HEIGHT,
    **context_options: Any,
) -> Iterator["playwright.sync_api.Page"]:  # noqa: F821
    """Open a file path or URL in a ``width`` x ``height`` viewport; yield the Page.

    Extra keyword arguments go to ``browser.new_context`` (e.g.
    ``color_scheme="dark"``, ``device_scale_factor=2``).  The page is loaded
    (``load`` event) and web fonts are settled before it is yielded.
    """
    browser = _get_browser()
    context = browser.new_context(viewport={"width": width, "height": height}, **context_options)
    try:
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        context.route("**/*", _route)
        page = context.new_page()
        page.goto(_to_url(path_or_url), wait_until="load")
        page.evaluate("document.fonts ? document.fonts.ready.then(() => true) : true")
        yield page
    finally:
        context.close()


_METRICS_JS = """() => {
  const d = document.documentElement, b = document.body;
  return {
    scroll_width: d.scrollWidth,
    client_width: d.clientWidth,
    scroll_height: d.scrollHeight,
    client_height: d.clientHeight,
    body_scroll_width: b ? b.scrollWidth : 0,
    inner_width: window.innerWidth,
  };
}"""

_BOXES_JS = """(selector) => Array.from(document.querySelectorAll(selector), (el) => {
  const r = el.getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
})"""


def layout_metrics(path: str | os.PathLike, width: int, height: int = DEFAULT_HEIGHT) -> dict:
    """Document-level sizes at viewport ``width``.

    Keys: ``scroll_width``, ``client_width``, ``scroll_height``,
    ``client_height`` (of ``document.documentElement``), ``body_scroll_width``,
    ``inner_width``.  No horizontal scroll means ``scroll_width <= client_width``.
    """
    with open_page(path, width, height) as page:
        return page.evaluate(_METRICS_JS)


def boxes(path: str | os.PathLike, width: int, selector: str,
          height: int = DEFAULT_HEIGHT) -> list[dict]:
    """Bounding boxes (document coordinates, CSS px) of elements matching ``selector``.

    Each box is ``{"x", "y", "width", "height"}``, in document order.
    """
    with open_page(path, width, height) as page:
        return page.evaluate(_BOXES_JS, selector)


def screenshot(path: str | os.PathLike, width: int, out_png: str | os.PathLike,
               height: int = DEFAULT_HEIGHT, full_page: bool = True) -> Path:
    """Save a PNG of the page rendered at ``width`` (full page by default)."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_page(path, width, height) as page:
        page.screenshot(path=str(out), full_page=full_page)
    return out
