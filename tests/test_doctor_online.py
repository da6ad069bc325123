"""`newsletter doctor --online`: a one-click POST of a probe token to the real server answers 200
and changes no reader; a server with another secret (or none listening) is a named failure."""

from __future__ import annotations

import pytest

from newsletter_mailer import tokens
from newsletter_mailer.doctor.records import check_unsubscribe_online
from newsletter_mailer.settings import load_settings
from newsletter_mailer.state import State
from tests.helpers import webserver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = webserver.start(tmp_path_factory.mktemp("online"))
    yield s
    webserver.stop(s)


def test_the_probe_is_answered_200_and_records_nothing(server):
    settings = load_settings(server.folder / "newsletter.toml")[0]
    check = check_unsubscribe_online(settings, State(server.state), {"NEWSLETTER_SECRET": webserver.SECRET})
    assert check.level == "ok" and "answered 200" in check.message, check
    store = server.audience()
    try:
        assert store.status(tokens.PROBE) is None and store.history(tokens.PROBE) == []
    finally:
        store.close()
    assert tokens.PROBE not in server.log.read_text()


def test_another_secret_is_a_named_failure(server, tmp_path):
    import secrets

    settings = load_settings(server.folder / "newsletter.toml")[0]
    check = check_unsubscribe_online(settings, State(tmp_path / "elsewhere"),
                                     {"NEWSLETTER_SECRET": secrets.token_urlsafe(32)})
    assert check.level == "error" and "answered 404" in check.message and "NEWSLETTER_SECRET" in check.message


def test_nothing_listening_is_a_named_failure(server, tmp_path):
    settings = load_settings(server.folder / "newsletter.toml")[0]
    port = webserver.free_port()
    web = settings.web.model_copy(update={"base_url": f"http://127.0.0.1:{port}"})
    check = check_unsubscribe_online(settings.model_copy(update={"web": web}), State(server.state),
                                     {"NEWSLETTER_SECRET": webserver.SECRET}, timeout=3)
    assert check.level == "error" and "failed" in check.message and "newsletter serve" in check.message
