"""The reader pages in headless Chromium: no JavaScript needed, styled under the strict CSP, phone-sized."""

from __future__ import annotations

import re

import pytest

from newsletter_mailer import tokens
from tests.helpers.browser import open_page
from tests.helpers.webserver import start, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start(tmp_path_factory.mktemp("webbrowser"))
    yield s
    stop(s)


def test_open_an_unsubscribe_link_and_press_the_button(server):
    address = "chromium-reader@example.org"
    url = server.url + "/u/" + tokens.make_unsubscribe(server.secret, server.list_id, address)
    with open_page(url, 375, java_script_enabled=False) as page:
        assert "Unsubscribe chromium-reader@… from CSCP Newsletter?" in page.inner_text("main")
        page.click("button")
        page.wait_for_load_state("load")
        assert "You are unsubscribed" in page.inner_text("h1")
        assert page.get_attribute("a.button", "href") == "../subscribe"
    store = server.audience()
    assert store.status(address).status == "unsubscribed" and store.status(address).source == "link"
    store.close()


def test_sign_up_in_the_form_then_confirm_from_the_email(server):
    address = "chromium-signup@example.org"
    with open_page(server.url + "/subscribe", 375, java_script_enabled=False) as page:
        page.fill("#email", address)
        page.fill("#name", "Chromium Reader")
        page.check("input[name=consent]")
        page.click("button")
        page.wait_for_load_state("load")
        assert "Check your inbox" in page.inner_text("h1")
    [mail] = server.mails_to(address)
    html = mail.get_payload()[1].get_payload(decode=True).decode()
    link = re.search(r'href="([^"]+/confirm/[^"]+)"', html).group(1)
    with open_page(link, 375, java_script_enabled=False) as page:
        page.click("button")
        page.wait_for_load_state("load")
        assert "You are subscribed" in page.inner_text("h1")
    store = server.audience()
    assert (address, "Chromium Reader") in store.signups()
    assert store.status(address).status == "subscribed" and store.status(address).source == "form"
    store.close()


def test_pages_are_styled_under_the_csp_and_fit_a_phone(server):
    with open_page(server.url + "/subscribe", 320) as page:
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        colour = page.evaluate("getComputedStyle(document.querySelector('button')).backgroundColor")
        honeypot = page.evaluate("document.querySelector('.hp').getBoundingClientRect().left")
    assert width[0] <= width[1]
    assert colour == "rgb(74, 42, 122)"  # brand.primary_color #4a2a7a: the stylesheet loaded
    assert honeypot < 0  # out of sight for people
