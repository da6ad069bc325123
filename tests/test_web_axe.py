"""The reader pages of `newsletter serve` in light and dark mode (issue 21): axe-core (npm, .ci)
injected into headless Chromium finds 0 WCAG A/AA violations on every page (sign-up form, its error,
the unsubscribe page and its result, the confirm page, a bad link, a missing page), and dark mode
draws the [brand.dark] colours. Against the real server (tests/helpers/webserver.py)."""

from __future__ import annotations

import os
import time

import pytest

from newsletter_mailer import palette, tokens
from newsletter_mailer.settings import load_settings
from tests.conftest import ROOT
from tests.helpers.browser import close_browser, open_page
from tests.helpers.webserver import start, stop
from tests.test_layouts_browser import _hex

AXE = ROOT / ".ci" / "node_modules" / "axe-core" / "axe.min.js"
DARK = '\n[brand.dark]\nbackground = "#101820"\nlink = "#9cc3ff"\n'
WCAG_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def _axe() -> str:
    if AXE.is_file():
        return AXE.read_text(encoding="utf-8")
    reason = f"axe-core is not installed ({AXE}): bash .ci/install-system.sh"
    if os.environ.get("CI"):
        pytest.fail(reason + ": missing in CI")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # a [brand.dark] of the test's own: the dark mode must come from it, not from a default
    s = start(tmp_path_factory.mktemp("axe"), edit=lambda toml: toml.replace("\n[brand.dark]\n", DARK, 1))
    yield s
    stop(s)
    close_browser()


def _pages(server) -> dict[str, tuple[str, str | None]]:
    """name -> (url, the button to press first or None)."""
    unsub = tokens.make_unsubscribe(server.secret, server.list_id, "axe-reader@example.org")
    confirm = tokens.make_confirm(server.secret, server.list_id, "axe-new@example.org", "Axe", int(time.time()) + 3600)
    return {
        "subscribe": (server.url + "/subscribe", None),
        "subscribe error": (server.url + "/subscribe", "button"),  # required fields left empty: the form's error
        "unsubscribe": (server.url + "/u/" + unsub, None),
        "confirm": (server.url + "/confirm/" + confirm, None),
        "bad link": (server.url + "/u/not-a-token", None),
        "missing page": (server.url + "/no/such/page", None),
        "unsubscribed": (server.url + "/u/" + unsub, "button"),
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_wcag_a_aa_violations(server, scheme):
    source = _axe()
    found = {}
    for name, (url, press) in _pages(server).items():
        with open_page(url, 375, color_scheme=scheme, bypass_csp=True, java_script_enabled=True) as page:
            if press:
                page.evaluate("() => { for (const i of document.querySelectorAll('[required]')) i.removeAttribute('required'); }")
                page.click(press)
                page.wait_for_load_state("load")
            page.evaluate(source)
            result = page.evaluate("(tags) => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_A_AA)
        assert result["passes"], name  # axe ran its rules
        found[name] = [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
    assert found == {name: [] for name in found}, found


def test_dark_mode_draws_brand_dark(server):
    settings = load_settings(server.folder / "newsletter.toml")[0]
    dark = palette.dark(settings.brand)
    assert dark.background == "#101820" and dark.link == "#9cc3ff"
    with open_page(server.url + "/subscribe", 375, color_scheme="dark") as page:
        body = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        card = page.evaluate("() => getComputedStyle(document.querySelector('.card')).backgroundColor")
        button = page.evaluate("() => getComputedStyle(document.querySelector('button')).backgroundColor")
    assert _hex(body) == dark.background and _hex(card) == dark.surface.lower() and _hex(button) == dark.primary.lower()
    with open_page(server.url + "/subscribe", 375, color_scheme="light") as page:
        body = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert _hex(body) == settings.brand.background_color.lower()
