"""SIGKILL the web server while one-click POSTs arrive: no answered unsubscribe is lost."""

from __future__ import annotations

import threading

import httpx
import pytest

from newsletter_mailer import tokens
from tests.helpers.webserver import start

pytestmark = pytest.mark.slow


def test_kill_while_posts_arrive_loses_no_answered_unsubscribe(tmp_path):
    server = start(tmp_path)
    answered: list[str] = []
    lock, enough = threading.Lock(), threading.Event()

    def post_many(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(100_000):
                address = f"kill-{worker}-{i}@example.org"
                path = "/u/" + tokens.make_unsubscribe(server.secret, server.list_id, address)
                try:
                    r = client.post(path, data={"List-Unsubscribe": "One-Click"})
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    with lock:
                        answered.append(address)
                        if len(answered) >= 300:
                            enough.set()

    threads = [threading.Thread(target=post_many, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    enough.wait(120)
    server.proc.kill()  # SIGKILL: no shutdown, no flush
    server.proc.wait()
    for t in threads:
        t.join(60)
    assert len(answered) >= 300
    store = server.audience()
    try:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        lost = [a for a in answered if (store.status(a) is None or store.status(a).status != "unsubscribed")]
        assert lost == []
    finally:
        store.close()
