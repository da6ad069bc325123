"""A reader confirmed through the real server (tests/helpers/webserver.py) starts the welcome
sequence; `serve --sequences` runs the steps from inside the app, with a clock the test steps."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from pathlib import Path

import anyio
import httpx

from newsletter_mailer.sequences.run import Runner
from newsletter_mailer.settings import load_settings
from newsletter_mailer.state.handle import State
from tests.helpers.webserver import SECRET, start, stop
from tests.test_sequences import DAY, Clock, received, write_sequence


def confirm(server, client: httpx.Client, address: str) -> None:
    r = client.post("/subscribe", data={"email": address, "name": "Ann Reader", "consent": "yes"})
    assert r.status_code == 200, r.text
    [mail] = server.mails_to(address)
    body = mail.get_payload()[0].get_payload(decode=True).decode()
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", body).group()
    assert client.post(link, data={"confirm": "yes"}).status_code == 200


def test_a_confirmed_sign_up_gets_step_1_in_one_run_then_the_others_at_their_times(tmp_path, database_url):
    folder = tmp_path / "nl"
    write_sequence(folder)
    extra = {"NEWSLETTER_DATABASE_URL": database_url} if database_url else {}
    server = start(folder, "signup_per_hour_client = 1000", env_extra=extra)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            confirm(server, client, "new@example.org")
            client.post("/subscribe", data={"email": "pending@example.org", "consent": "yes"})  # never confirmed
    finally:
        stop(server)
    settings, settings_dir = load_settings(folder / "newsletter.toml")
    clock = Clock(time.time() + 5)  # the server's clock started the reader a moment ago
    run = Runner(settings, settings_dir, State(server.state, database_url), {"NEWSLETTER_SECRET": SECRET},
                 outbox=server.outbox, clock=clock).run
    assert [(s.step, s.sent) for s in run().steps] == [("1-hello", 1)]
    assert received(folder) == {("1-hello", "new@example.org"): 1}
    [path] = (server.outbox / "1-hello").glob("*.eml")
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert mail["Subject"] == "Step 1-hello Ann Reader"  # the name given at sign-up
    first = clock.t
    for days in (1, 3, 5, 10, 11):
        clock.t = first + days * DAY
        run()
    got = received(folder)
    assert set(got) == {(s, "new@example.org") for s in ("1-hello", "2-how-to-help", "3-training")}
    assert max(got.values()) == 1


def test_serve_sequences_runs_the_loop_inside_the_app(tmp_path):
    from starlette.testclient import TestClient

    from newsletter_mailer.state.handle import State as St
    from newsletter_mailer.sequences import members
    from newsletter_mailer.web.application import create_app
    from tests.conftest import EXAMPLE_SETTINGS, EXAMPLE_WEB, without_web

    folder = tmp_path / "nl"
    write_sequence(folder)
    (folder / "newsletter.toml").write_text(without_web(EXAMPLE_SETTINGS.read_text()) + "\n" + EXAMPLE_WEB)
    clock = Clock()
    store = St(folder / "state").audience()
    with store.transaction():
        members.enrol(store, "welcome", ["loop@example.org"], int(clock.t))
    store.close()
    ran, go = threading.Semaphore(0), threading.Event()

    async def wait() -> None:  # the loop's minute, stepped by the test
        ran.release()
        await anyio.to_thread.run_sync(go.wait)
        go.clear()

    app = create_app(folder / "newsletter.toml", folder / "state", {"NEWSLETTER_SECRET": SECRET},
                     deliver_confirmation=lambda *a: None, sequences=True, clock=clock)
    app.state.site.sequence_wait = wait
    with TestClient(app):
        assert ran.acquire(timeout=60)
        assert received(folder) == {("1-hello", "loop@example.org"): 1}
        clock.t += 3 * DAY
        go.set()
        assert ran.acquire(timeout=60)
        assert set(received(folder)) == {("1-hello", "loop@example.org"), ("2-how-to-help", "loop@example.org")}
        go.set()
        assert ran.acquire(timeout=60)   # a minute later: nothing due, nothing twice
        assert sum(received(folder).values()) == 2
        go.set()
